//! Authenticode signatures: the PKCS #7 `SignedData` that UEFI firmware
//! checks against its `db` before it runs an EFI application, made over the
//! image digest of [`mkhost_image::authenticode`], and the check of one
//! (for `mkhost inspect` and the tests).
//!
//! The structure is Microsoft's ("Windows Authenticode Portable Executable
//! Signature Format"), as `sbsign` writes it: the content is a
//! `SpcIndirectDataContent` (the image's SHA-256 digest, and an
//! `SpcPeImageData` with the obsolete file link every signer writes); the
//! one signer has the signed attributes contentType, messageDigest (over the
//! content's DER value, without its tag and length) and an empty
//! `SpcSpOpusInfo`, and signs them with RSA PKCS #1 v1.5 SHA-256. No signing
//! time is written, so the same key and image give the same bytes.

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier;
use der::asn1::{Any, BitString, Null, OctetString, SetOfVec};
use der::{Decode, Encode, Sequence};
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::Certificate;

use crate::error::SigningError;
use crate::signer::Signer;

/// `SPC_INDIRECT_DATA_OBJID`.
const SPC_INDIRECT_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.4");
/// `SPC_PE_IMAGE_DATAOBJ`.
const SPC_PE_IMAGE_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.15");
/// `SPC_SP_OPUS_INFO_OBJID`.
const SPC_SP_OPUS_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.12");
/// PKCS #9 contentType.
const CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
/// PKCS #9 messageDigest.
const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
/// PKCS #7 signedData.
pub(crate) const SIGNED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// PKCS #7 data.
pub(crate) const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// SHA-256.
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// rsaEncryption, the signature algorithm Authenticode signers name.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The `SpcLink` every signer writes: `file` = `<<<Obsolete>>>` (a
/// `[2] EXPLICIT SpcString`, `[0] IMPLICIT BMPString`).
const OBSOLETE_LINK: [u8; 32] = [
    0xa2, 0x1e, 0x80, 0x1c, 0x00, 0x3c, 0x00, 0x3c, 0x00, 0x3c, 0x00, 0x4f, 0x00, 0x62, 0x00, 0x73,
    0x00, 0x6f, 0x00, 0x6c, 0x00, 0x65, 0x00, 0x74, 0x00, 0x65, 0x00, 0x3e, 0x00, 0x3e, 0x00, 0x3e,
];

/// `SpcIndirectDataContent`.
#[derive(Clone, Debug, Sequence)]
struct SpcIndirectDataContent {
    data: SpcAttributeTypeAndOptionalValue,
    message_digest: DigestInfo,
}

/// `SpcAttributeTypeAndOptionalValue` of a PE image.
#[derive(Clone, Debug, Sequence)]
struct SpcAttributeTypeAndOptionalValue {
    value_type: ObjectIdentifier,
    value: SpcPeImageData,
}

/// `SpcPeImageData`: no flags, the obsolete link.
#[derive(Clone, Debug, Sequence)]
struct SpcPeImageData {
    flags: BitString,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    file: Option<Any>,
}

/// PKCS #1 `DigestInfo`.
#[derive(Clone, Debug, Sequence)]
struct DigestInfo {
    digest_algorithm: AlgorithmIdentifierOwned,
    digest: OctetString,
}

fn sha256_algorithm() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: SHA256,
        parameters: Some(Any::from(Null)),
    }
}

fn der_error(e: der::Error) -> SigningError {
    SigningError::Encode(e.to_string())
}

/// Signs `pe` (an unsigned PE32+ image): the image with its certificate
/// table.
pub fn sign_pe(pe: &[u8], signer: &Signer) -> Result<Vec<u8>, SigningError> {
    let prepared = mkhost_image::authenticode::prepare(pe)?;
    let digest = mkhost_image::authenticode::digest(&prepared)?;
    let signed_data = signed_data(&digest, signer)?;
    Ok(mkhost_image::authenticode::attach(&prepared, &signed_data)?)
}

/// The DER `ContentInfo` of the Authenticode `SignedData` of an image
/// whose digest is `digest`.
fn signed_data(digest: &[u8; 32], signer: &Signer) -> Result<Vec<u8>, SigningError> {
    let content = SpcIndirectDataContent {
        data: SpcAttributeTypeAndOptionalValue {
            value_type: SPC_PE_IMAGE_DATA,
            value: SpcPeImageData {
                flags: BitString::new(0, Vec::new()).map_err(der_error)?,
                file: Some(Any::from_der(&OBSOLETE_LINK).map_err(der_error)?),
            },
        },
        message_digest: DigestInfo {
            digest_algorithm: sha256_algorithm(),
            digest: OctetString::new(digest.to_vec()).map_err(der_error)?,
        },
    };
    let content_der = content.to_der().map_err(der_error)?;
    let value = der_value(&content_der)?;
    let signer_info = signer_info(
        signer,
        SPC_INDIRECT_DATA,
        &Sha256::digest(value),
        &[attribute(
            SPC_SP_OPUS_INFO,
            Any::from_der(&[0x30, 0x00]).map_err(der_error)?,
        )?],
    )?;
    content_info(
        signer,
        EncapsulatedContentInfo {
            econtent_type: SPC_INDIRECT_DATA,
            econtent: Some(Any::from_der(&content_der).map_err(der_error)?),
        },
        signer_info,
    )
}

/// The value of a DER TLV, without its tag and length.
fn der_value(tlv: &[u8]) -> Result<&[u8], SigningError> {
    let mut reader = der::SliceReader::new(tlv).map_err(der_error)?;
    let header = der::Header::decode(&mut reader).map_err(der_error)?;
    let header_len = usize::try_from(header.encoded_len().map_err(der_error)?)
        .map_err(|_| SigningError::Encode("header length".into()))?;
    Ok(&tlv[header_len..])
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, SigningError> {
    let mut values = SetOfVec::new();
    values.insert(value).map_err(der_error)?;
    Ok(Attribute { oid, values })
}

/// One `SignerInfo`: contentType `content_type`, messageDigest `digest`
/// and `extra` signed attributes, signed by `signer`.
pub(crate) fn signer_info(
    signer: &Signer,
    content_type: ObjectIdentifier,
    digest: &[u8],
    extra: &[Attribute],
) -> Result<SignerInfo, SigningError> {
    let mut attributes = SetOfVec::new();
    attributes
        .insert(attribute(CONTENT_TYPE, Any::from(content_type))?)
        .map_err(der_error)?;
    attributes
        .insert(attribute(
            MESSAGE_DIGEST,
            Any::encode_from(&OctetString::new(digest.to_vec()).map_err(der_error)?)
                .map_err(der_error)?,
        )?)
        .map_err(der_error)?;
    for a in extra {
        attributes.insert(a.clone()).map_err(der_error)?;
    }
    // The signature covers the attributes' DER as a SET OF (tag 0x31).
    let signature = signer.sign(&attributes.to_der().map_err(der_error)?)?;
    Ok(SignerInfo {
        version: CmsVersion::V1,
        sid: signer_id(signer.certificate()),
        digest_alg: sha256_algorithm(),
        signed_attrs: Some(attributes),
        signature_algorithm: rsa_algorithm(),
        signature: OctetString::new(signature).map_err(der_error)?,
        unsigned_attrs: None,
    })
}

/// A `SignerInfo` with no signed attributes: the signature is over
/// `message` itself (what `sign-efi-sig-list` writes for UEFI variables).
pub(crate) fn plain_signer_info(
    signer: &Signer,
    message: &[u8],
) -> Result<SignerInfo, SigningError> {
    Ok(SignerInfo {
        version: CmsVersion::V1,
        sid: signer_id(signer.certificate()),
        digest_alg: sha256_algorithm(),
        signed_attrs: None,
        signature_algorithm: rsa_algorithm(),
        signature: OctetString::new(signer.sign(message)?).map_err(der_error)?,
        unsigned_attrs: None,
    })
}

fn rsa_algorithm() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: RSA_ENCRYPTION,
        parameters: Some(Any::from(Null)),
    }
}

fn signer_id(certificate: &Certificate) -> SignerIdentifier {
    SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: certificate.tbs_certificate.issuer.clone(),
        serial_number: certificate.tbs_certificate.serial_number.clone(),
    })
}

/// The `SignedData` of one signer, with the signer's certificate.
pub(crate) fn build_signed_data(
    signer: &Signer,
    encapsulated: EncapsulatedContentInfo,
    signer_info: SignerInfo,
) -> Result<SignedData, SigningError> {
    let mut digests = SetOfVec::new();
    digests.insert(sha256_algorithm()).map_err(der_error)?;
    let mut certificates = SetOfVec::new();
    certificates
        .insert(CertificateChoices::Certificate(
            signer.certificate().clone(),
        ))
        .map_err(der_error)?;
    let mut signers = SetOfVec::new();
    signers.insert(signer_info).map_err(der_error)?;
    Ok(SignedData {
        version: CmsVersion::V1,
        digest_algorithms: digests,
        encap_content_info: encapsulated,
        certificates: Some(CertificateSet(certificates)),
        crls: None,
        signer_infos: SignerInfos(signers),
    })
}

fn content_info(
    signer: &Signer,
    encapsulated: EncapsulatedContentInfo,
    signer_info: SignerInfo,
) -> Result<Vec<u8>, SigningError> {
    let signed = build_signed_data(signer, encapsulated, signer_info)?;
    ContentInfo {
        content_type: SIGNED_DATA,
        content: Any::encode_from(&signed).map_err(der_error)?,
    }
    .to_der()
    .map_err(der_error)
}

/// What a signature in a PE says and whether it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeSignature {
    /// The signer's certificate.
    pub certificate: crate::signer::CertificateInfo,
    /// The digest it signs equals the image's.
    pub digest_matches: bool,
    /// The RSA signature over the signed attributes verifies with the
    /// certificate's key.
    pub signature_valid: bool,
}

/// Reads and checks every Authenticode signature of `pe`.
pub fn verify_pe(pe: &[u8]) -> Result<Vec<PeSignature>, SigningError> {
    let digest = mkhost_image::authenticode::digest(pe)?;
    let mut found = Vec::new();
    for der_bytes in mkhost_image::authenticode::signatures(pe)? {
        found.push(verify_one(der_bytes, &digest)?);
    }
    Ok(found)
}

fn verify_one(der_bytes: &[u8], digest: &[u8; 32]) -> Result<PeSignature, SigningError> {
    let bad = |why: String| SigningError::BadSignature(why);
    let info = ContentInfo::from_der(der_bytes).map_err(|e| bad(format!("ContentInfo: {e}")))?;
    if info.content_type != SIGNED_DATA {
        return Err(bad(format!(
            "content type {} is not signedData",
            info.content_type
        )));
    }
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|e| bad(format!("SignedData: {e}")))?;
    let content = signed
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| bad("no content".into()))?;
    let content_der = content.to_der().map_err(der_error)?;
    let indirect = SpcIndirectDataContent::from_der(&content_der)
        .map_err(|e| bad(format!("SpcIndirectDataContent: {e}")))?;
    let digest_matches = indirect.message_digest.digest.as_bytes() == digest;
    let signer_info = signed
        .signer_infos
        .0
        .iter()
        .next()
        .ok_or_else(|| bad("no signer".into()))?;
    let certificate = signed
        .certificates
        .as_ref()
        .and_then(|set| {
            set.0.iter().find_map(|choice| match choice {
                CertificateChoices::Certificate(c) if signer_id(c) == signer_info.sid => {
                    Some(c.clone())
                }
                _ => None,
            })
        })
        .ok_or_else(|| bad("the signer's certificate is not in the signature".into()))?;
    let certificate_der = certificate.to_der().map_err(der_error)?;
    let attributes = signer_info
        .signed_attrs
        .as_ref()
        .ok_or_else(|| bad("no signed attributes".into()))?;
    let value = der_value(&content_der)?;
    let expected = OctetString::new(Sha256::digest(value).to_vec()).map_err(der_error)?;
    let attribute_digest_matches = attributes.iter().any(|a| {
        a.oid == MESSAGE_DIGEST
            && a.values
                .iter()
                .any(|v| v.decode_as::<OctetString>().ok().as_ref() == Some(&expected))
    });
    let spki = certificate
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let public =
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, spki);
    let signature_valid = attribute_digest_matches
        && public
            .verify(
                &attributes.to_der().map_err(der_error)?,
                signer_info.signature.as_bytes(),
            )
            .is_ok();
    Ok(PeSignature {
        certificate: crate::signer::info_of(&certificate, &certificate_der),
        digest_matches,
        signature_valid,
    })
}
