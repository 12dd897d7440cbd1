//! A one-line description of a certificate for the log: whom it names and until when it is valid,
//! so an operator can see at a glance which certificate is being served.

use x509_parser::extensions::GeneralName;
use x509_parser::parse_x509_certificate;

pub struct Summary {
    /// DNS and IP names from the subjectAltName extension, else the subject.
    pub names: String,
    pub not_after: String,
    pub expired: bool,
}

pub fn summarize(der: &[u8]) -> Option<Summary> {
    let (_, certificate) = parse_x509_certificate(der).ok()?;
    let alt_names: Vec<String> = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|extension| {
            extension
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => ip_text(bytes),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let names = if alt_names.is_empty() {
        certificate.subject().to_string()
    } else {
        alt_names.join(", ")
    };
    let validity = certificate.validity();
    Some(Summary {
        names,
        not_after: validity.not_after.to_string(),
        expired: !validity.is_valid(),
    })
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    let address = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(address.to_string())
}
