//! The daemon's event stream (`docker events`): what happened to containers
//! and images, in order, to whoever listens now, and the last
//! [`RECENT`] events again for a listener that asks from an earlier time.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// How many past events are kept for `since`.
pub const RECENT: usize = 1024;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `container`, `image`, `network` or `volume`.
    pub kind: &'static str,
    /// `create`, `start`, `die`, `destroy`, `pull`, `delete`, ….
    pub action: String,
    /// The container's id, or the image's reference.
    pub id: String,
    /// Name, image, labels, exit code.
    pub attributes: BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    pub time_nano: u128,
}

/// The stream and its recent past.
pub struct Events {
    sender: tokio::sync::broadcast::Sender<Event>,
    recent: Mutex<VecDeque<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// An empty stream.
    pub fn new() -> Self {
        Events {
            sender: tokio::sync::broadcast::Sender::new(RECENT),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        }
    }

    /// Records an event and hands it to every listener.
    pub fn emit(
        &self,
        kind: &'static str,
        action: &str,
        id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        let time_nano = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let event = Event {
            kind,
            action: action.to_string(),
            id: id.to_string(),
            attributes,
            time_nano,
        };
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(event.clone());
        // Sent under the lock: a listener that subscribed while holding it
        // sees each event once, from the past or live.
        let _ = self.sender.send(event);
    }

    /// The kept events from `since_nano` on, and a receiver of the ones to
    /// come (none lost or repeated in between).
    pub fn listen(
        &self,
        since_nano: Option<u128>,
    ) -> (Vec<Event>, tokio::sync::broadcast::Receiver<Event>) {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let past = match since_nano {
            Some(since) => recent
                .iter()
                .filter(|e| e.time_nano >= since)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        (past, self.sender.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_get_the_past_then_the_live_events() {
        let events = Events::new();
        events.emit("container", "create", "a", BTreeMap::new());
        let (past, mut live) = events.listen(Some(0));
        assert_eq!(past.len(), 1);
        events.emit("container", "start", "a", BTreeMap::new());
        assert_eq!(live.try_recv().unwrap().action, "start");
        let (none, _) = events.listen(None);
        assert!(none.is_empty());
        for i in 0..RECENT + 5 {
            events.emit("image", "pull", &i.to_string(), BTreeMap::new());
        }
        assert_eq!(events.listen(Some(0)).0.len(), RECENT);
    }
}
