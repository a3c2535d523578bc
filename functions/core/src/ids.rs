//! Typed identifiers. Every id is a prefix plus a ULID, so ids sort by creation time and
//! one kind of id can never be passed where another is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Ulid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn new() -> Self {
                Self(Ulid::new())
            }

            /// The all-zero id, which [`Self::new`] never mints: for reserved records.
            pub const fn nil() -> Self {
                Self(Ulid::nil())
            }

            pub fn from_ulid(ulid: Ulid) -> Self {
                Self(ulid)
            }

            pub fn ulid(&self) -> Ulid {
                self.0
            }

            /// Parses `<prefix>_<ulid>`; anything else is `None`.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix(concat!($prefix, "_"))?;
                Ulid::from_string(rest).ok().map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}_{}", $prefix, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::parse(s).ok_or(InvalidId)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(concat!("invalid ", $prefix, " id"))
                })
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidId;

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid id")
    }
}

impl std::error::Error for InvalidId {}

typed_id!(
    /// A tenant (an organisation of the provider).
    TenantId,
    "tn"
);
typed_id!(
    /// One API key of a tenant.
    ApiKeyId,
    "key"
);
typed_id!(
    /// A webhook endpoint.
    EndpointId,
    "ep"
);
typed_id!(
    /// A published event.
    MessageId,
    "msg"
);
typed_id!(
    /// One HTTP try of one message to one endpoint.
    AttemptId,
    "atm"
);

/// The most messages one page holds (see [`MessageId::page`]).
pub const PAGE_CAPACITY: usize = 16;

impl MessageId {
    /// Ids for `n` messages stored together as one page (at most [`PAGE_CAPACITY`]):
    /// consecutive ULIDs from a fresh one whose four lowest bits are zero, so each
    /// message's page is found from its id alone ([`MessageId::page_base`]) and the page's
    /// messages sort together, in the order given.
    pub fn page(n: usize) -> Vec<MessageId> {
        assert!(
            n <= PAGE_CAPACITY,
            "a page holds at most {PAGE_CAPACITY} messages"
        );
        let base = Ulid::new().0 & !(PAGE_CAPACITY as u128 - 1);
        (0..n as u128).map(|i| MessageId(Ulid(base | i))).collect()
    }

    /// The first id of the page this id would belong to, if it was minted by
    /// [`MessageId::page`].
    pub fn page_base(&self) -> MessageId {
        MessageId(Ulid(self.0 .0 & !(PAGE_CAPACITY as u128 - 1)))
    }

    /// This id's place in its page, if it was minted by [`MessageId::page`].
    pub fn page_index(&self) -> usize {
        (self.0 .0 & (PAGE_CAPACITY as u128 - 1)) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_ids_are_consecutive_sort_in_order_and_name_their_page() {
        let page = MessageId::page(10);
        assert_eq!(page.len(), 10);
        assert_eq!(page[0].page_base(), page[0]);
        for (i, id) in page.iter().enumerate() {
            assert_eq!(id.page_base(), page[0]);
            assert_eq!(id.page_index(), i);
        }
        assert!(page.windows(2).all(|w| w[0] < w[1]));
        let other = MessageId::page(10);
        assert_ne!(other[0], page[0]);
        assert!(other.iter().all(|id| !page.contains(id)));
    }

    #[test]
    fn round_trips_through_text_and_json() {
        let id = MessageId::new();
        let text = id.to_string();
        assert!(text.starts_with("msg_"));
        assert_eq!(MessageId::parse(&text), Some(id));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<MessageId>(&json).unwrap(), id);
    }

    #[test]
    fn rejects_other_prefixes_and_garbage() {
        let ep = EndpointId::new().to_string();
        assert_eq!(MessageId::parse(&ep), None);
        assert_eq!(MessageId::parse("msg_not-a-ulid"), None);
        assert_eq!(MessageId::parse(""), None);
        assert!(serde_json::from_str::<TenantId>("\"tn_x\"").is_err());
    }
}
