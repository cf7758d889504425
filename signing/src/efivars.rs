//! The UEFI variables that enroll a Secure Boot key set: EFI signature
//! lists (`.esl`, one X.509 certificate each) and the time-based
//! authenticated writes of them (`.auth`) that firmware setup screens,
//! `efi-updatevar` and `virt-fw-vars` take, laid out as UEFI 2.10 §8.2.2
//! (`EFI_VARIABLE_AUTHENTICATION_2`) says and as efitools'
//! `sign-efi-sig-list` writes them: a PKCS #7 `SignedData` with no signed
//! attributes and detached content, over the variable's name, vendor GUID,
//! attributes, time stamp and data.

use cms::signed_data::EncapsulatedContentInfo;
use der::Encode;

use crate::authenticode::{build_signed_data, plain_signer_info, DATA};
use crate::error::SigningError;
use crate::signer::Signer;

/// `EFI_CERT_X509_GUID`.
const CERT_X509: uuid::Uuid = uuid::uuid!("a5c059a1-94e4-4aa7-87b5-ab155c2bf072");
/// `EFI_CERT_TYPE_PKCS7_GUID`.
const CERT_TYPE_PKCS7: uuid::Uuid = uuid::uuid!("4aafd29d-68df-49ee-8aa9-347d375665a7");
/// `EFI_GLOBAL_VARIABLE`: the vendor of PK and KEK.
const GLOBAL_VARIABLE: uuid::Uuid = uuid::uuid!("8be4df61-93ca-11d2-aa0d-00e098032b8c");
/// `EFI_IMAGE_SECURITY_DATABASE_GUID`: the vendor of db and dbx.
const IMAGE_SECURITY_DATABASE: uuid::Uuid = uuid::uuid!("d719b2cb-3d3a-4596-a3bc-dad00e67656f");
/// `NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS |
/// TIME_BASED_AUTHENTICATED_WRITE_ACCESS`.
const ATTRIBUTES: u32 = 0x01 | 0x02 | 0x04 | 0x20;
/// `WIN_CERT_TYPE_EFI_GUID`.
const WIN_CERT_TYPE_EFI_GUID: u16 = 0x0ef1;

/// A Secure Boot variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    /// The platform key.
    Pk,
    /// Key exchange keys.
    Kek,
    /// The allowed signatures.
    Db,
}

impl Variable {
    /// The variable's name.
    pub fn name(self) -> &'static str {
        match self {
            Variable::Pk => "PK",
            Variable::Kek => "KEK",
            Variable::Db => "db",
        }
    }

    fn vendor(self) -> uuid::Uuid {
        match self {
            Variable::Pk | Variable::Kek => GLOBAL_VARIABLE,
            Variable::Db => IMAGE_SECURITY_DATABASE,
        }
    }
}

/// An EFI signature list holding one X.509 certificate (DER), owned by
/// `owner`.
pub fn signature_list(certificate_der: &[u8], owner: uuid::Uuid) -> Result<Vec<u8>, SigningError> {
    let signature_size = 16 + certificate_der.len();
    let list_size = 28 + signature_size;
    let (Ok(signature_size), Ok(list_size)) =
        (u32::try_from(signature_size), u32::try_from(list_size))
    else {
        return Err(SigningError::Encode("certificate too large".into()));
    };
    let mut esl = Vec::with_capacity(list_size as usize);
    esl.extend_from_slice(&CERT_X509.to_bytes_le());
    esl.extend_from_slice(&list_size.to_le_bytes());
    esl.extend_from_slice(&0u32.to_le_bytes());
    esl.extend_from_slice(&signature_size.to_le_bytes());
    esl.extend_from_slice(&owner.to_bytes_le());
    esl.extend_from_slice(certificate_der);
    Ok(esl)
}

/// `EFI_TIME` of `unix` seconds, UTC.
fn efi_time(unix: u64) -> [u8; 16] {
    let (year, month, day, hour, minute, second) = crate::text::civil(unix);
    let mut time = [0u8; 16];
    time[..2].copy_from_slice(&(year as u16).to_le_bytes());
    time[2] = month as u8;
    time[3] = day as u8;
    time[4] = hour as u8;
    time[5] = minute as u8;
    time[6] = second as u8;
    // Pad1, Nanosecond, TimeZone, Daylight, Pad2 stay 0.
    time
}

/// The authenticated write of `variable` := `esl`, signed by `signer`, at
/// time `unix` (seconds since the epoch): what an `.auth` file holds.
pub fn authenticated_write(
    variable: Variable,
    esl: &[u8],
    signer: &Signer,
    unix: u64,
) -> Result<Vec<u8>, SigningError> {
    let time = efi_time(unix);
    let mut message: Vec<u8> = variable
        .name()
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    message.extend_from_slice(&variable.vendor().to_bytes_le());
    message.extend_from_slice(&ATTRIBUTES.to_le_bytes());
    message.extend_from_slice(&time);
    message.extend_from_slice(esl);
    let signed = build_signed_data(
        signer,
        EncapsulatedContentInfo {
            econtent_type: DATA,
            econtent: None,
        },
        plain_signer_info(signer, &message)?,
    )?
    .to_der()
    .map_err(|e| SigningError::Encode(e.to_string()))?;
    let length = u32::try_from(8 + 16 + signed.len())
        .map_err(|_| SigningError::Encode("signature too large".into()))?;
    let mut auth = Vec::with_capacity(16 + length as usize + esl.len());
    auth.extend_from_slice(&time);
    auth.extend_from_slice(&length.to_le_bytes());
    auth.extend_from_slice(&0x0200u16.to_le_bytes());
    auth.extend_from_slice(&WIN_CERT_TYPE_EFI_GUID.to_le_bytes());
    auth.extend_from_slice(&CERT_TYPE_PKCS7.to_bytes_le());
    auth.extend_from_slice(&signed);
    auth.extend_from_slice(esl);
    Ok(auth)
}
