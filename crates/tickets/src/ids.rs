//! Public ids: opaque, prefixed, time-sortable strings over the database's bigint keys.
//!
//! Rows are keyed by `deskhook_id()` (milliseconds since 2025 in the high bits, a sequence in
//! the low bits; see the first migration). The API shows `<prefix>_<13 Crockford base32
//! characters>`: fixed width, so string order is creation order. Clients must treat ids as
//! opaque; a malformed id or one with another resource's prefix simply finds nothing.

use std::fmt;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const WIDTH: usize = 13;

/// The kinds of public ids, with their prefixes (api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `ws_`
    Workspace,
    /// `key_`
    ApiKey,
    /// `tkt_`
    Ticket,
    /// `cus_`
    Customer,
    /// `usr_`
    User,
    /// `msg_`
    Message,
    /// `tag_`
    Tag,
    /// `grp_`
    Group,
    /// `slp_`
    SlaPolicy,
    /// `cal_`
    Calendar,
    /// `wh_`
    Webhook,
    /// `evt_`
    Event,
    /// `dlv_`
    Delivery,
    /// `art_`
    Article,
    /// `act_` (ticket activity entries)
    Activity,
}

impl Kind {
    /// The prefix, without the underscore.
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Workspace => "ws",
            Self::ApiKey => "key",
            Self::Ticket => "tkt",
            Self::Customer => "cus",
            Self::User => "usr",
            Self::Message => "msg",
            Self::Tag => "tag",
            Self::Group => "grp",
            Self::SlaPolicy => "slp",
            Self::Calendar => "cal",
            Self::Webhook => "wh",
            Self::Event => "evt",
            Self::Delivery => "dlv",
            Self::Article => "art",
            Self::Activity => "act",
        }
    }
}

/// Formats a key as a public id of `kind`.
pub fn encode(kind: Kind, key: i64) -> String {
    let mut out = String::with_capacity(kind.prefix().len() + 1 + WIDTH);
    out.push_str(kind.prefix());
    out.push('_');
    // Reinterpreting as unsigned keeps the order of the (always positive) keys.
    let value = key as u64;
    for i in (0..WIDTH).rev() {
        let digit = ((value >> (i * 5)) & 0x1f) as usize;
        out.push(char::from(ALPHABET[digit]));
    }
    out
}

/// Parses a public id of `kind` back to its key; `None` for anything else.
pub fn decode(kind: Kind, id: &str) -> Option<i64> {
    let rest = id.strip_prefix(kind.prefix())?.strip_prefix('_')?;
    if rest.len() != WIDTH {
        return None;
    }
    let mut value: u64 = 0;
    for (position, byte) in rest.bytes().enumerate() {
        let digit = match byte.to_ascii_uppercase() {
            b'O' => 0,
            b'I' | b'L' => 1,
            upper => ALPHABET.iter().position(|&c| c == upper)? as u64,
        };
        // The first character carries only 4 bits (13 × 5 = 65).
        if position == 0 && digit > 0xf {
            return None;
        }
        value = (value << 5) | digit;
    }
    i64::try_from(value).ok()
}

/// A public id ready to serialise, for places that hold a kind and a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicId(pub Kind, pub i64);

impl fmt::Display for PublicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode(self.0, self.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_by_key() {
        let keys = [1_i64, 31, 32, 1 << 40, 0x7ff0_0000_0000_0001, i64::MAX];
        let ids: Vec<String> = keys.iter().map(|&k| encode(Kind::Ticket, k)).collect();
        for (key, id) in keys.iter().zip(&ids) {
            assert!(id.starts_with("tkt_"));
            assert_eq!(id.len(), 4 + WIDTH);
            assert_eq!(decode(Kind::Ticket, id), Some(*key));
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids, "string order must be key order");
    }

    #[test]
    fn wrong_kinds_and_garbage_find_nothing() {
        let id = encode(Kind::Ticket, 42);
        assert_eq!(decode(Kind::Customer, &id), None);
        assert_eq!(decode(Kind::Ticket, "tkt_"), None);
        assert_eq!(decode(Kind::Ticket, "tkt_!!!!!!!!!!!!!"), None);
        assert_eq!(decode(Kind::Ticket, "tkt_ZZZZZZZZZZZZZ"), None);
        assert_eq!(decode(Kind::Ticket, "4821"), None);
    }
}
