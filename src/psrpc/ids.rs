//! psrpc's ids: a prefix and 12 characters of `[a-zA-Z0-9]`.

use rand::distr::{Alphanumeric, SampleString};

/// How many random characters follow the prefix.
const ID_LEN: usize = 12;

fn new_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + ID_LEN);
    id.push_str(prefix);
    Alphanumeric.append_string(&mut rand::rng(), &mut id, ID_LEN);
    id
}

/// `SRV_...`: names this process as a server in claims and responses.
pub fn server_id() -> String {
    new_id("SRV_")
}

/// `CLI_...`: names this process as a client; its claim and response channels carry it.
pub fn client_id() -> String {
    new_id("CLI_")
}

/// `REQ_...`: one attempt of one call.
pub fn request_id() -> String {
    new_id("REQ_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefix_and_twelve_alphanumerics() {
        for (id, prefix) in [
            (server_id(), "SRV_"),
            (client_id(), "CLI_"),
            (request_id(), "REQ_"),
        ] {
            let rest = id.strip_prefix(prefix).expect("prefix");
            assert_eq!(rest.len(), 12, "{id}");
            assert!(rest.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        }
        assert_ne!(request_id(), request_id());
    }
}
