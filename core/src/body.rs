//! An outgoing request's body: one buffer, or a frame around a part of the dispatch's text.
//!
//! A dispatch split into requests gives each the payload's envelope (`{..,"profiles":[` and
//! `],..}`, the same for all of them) around its own profiles, which are already in the
//! text the platform sent. [`RequestBody::framed`] keeps them where they are: the envelope
//! once for the dispatch, the profiles as a slice of its text, and the parts go out
//! together in one write. Accepting a dispatch of 100,000 profiles then copies none of
//! them, and the bodies waiting to be sent weigh no more than the text they came in.
//!
//! A framed body keeps its dispatch's text alive. That is what the first attempt wants,
//! which comes soon; a body that waits longer (its request is due again later, or failed
//! and is kept for a replay) takes its own copy by [`RequestBody::owned`], so that one slow
//! request does not hold on to the text of all the others.

use std::fmt;

use bytes::buf::Chain;
use bytes::{Buf, Bytes, BytesMut};

/// The bytes of one request: `head`, `middle` and `tail`, in that order.
#[derive(Clone, Default)]
pub struct RequestBody {
    head: Bytes,
    middle: Bytes,
    tail: Bytes,
}

/// A body as it goes on the wire: its parts in one vectored write.
pub type WireBody = Chain<Chain<Bytes, Bytes>, Bytes>;

impl RequestBody {
    /// `middle` between `head` and `tail`, each shared rather than copied.
    pub fn framed(head: Bytes, middle: Bytes, tail: Bytes) -> Self {
        Self { head, middle, tail }
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.middle.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its three parts (any may be empty).
    pub fn parts(&self) -> [&Bytes; 3] {
        [&self.head, &self.middle, &self.tail]
    }

    /// Whether it is a frame around a part of other text (see [`RequestBody::owned`]).
    pub fn is_framed(&self) -> bool {
        !self.head.is_empty() || !self.tail.is_empty()
    }

    /// The body in one buffer: itself when it is one, else a copy.
    pub fn to_bytes(&self) -> Bytes {
        if self.is_framed() { Bytes::from(self.to_vec()) } else { self.middle.clone() }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        self.write_to(&mut out);
        out
    }

    /// Appends the body to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for part in self.parts() {
            out.extend_from_slice(part);
        }
    }

    /// The same bytes in a buffer of their own: a framed body lets go of its dispatch's text.
    pub fn owned(&self) -> Self {
        if self.is_framed() { Self::from(self.to_vec()) } else { self.clone() }
    }

    /// The parts, to be sent in one write.
    pub fn into_wire(self) -> WireBody {
        self.head.chain(self.middle).chain(self.tail)
    }
}

impl From<Bytes> for RequestBody {
    fn from(whole: Bytes) -> Self {
        Self { head: Bytes::new(), middle: whole, tail: Bytes::new() }
    }
}

impl From<Vec<u8>> for RequestBody {
    fn from(whole: Vec<u8>) -> Self {
        Self::from(Bytes::from(whole))
    }
}

impl From<String> for RequestBody {
    fn from(whole: String) -> Self {
        Self::from(Bytes::from(whole))
    }
}

impl From<&'static str> for RequestBody {
    fn from(whole: &'static str) -> Self {
        Self::from(Bytes::from_static(whole.as_bytes()))
    }
}

/// Equal when the bytes are, however they are held.
impl PartialEq for RequestBody {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.clone().into_wire().chunk_eq(other.clone().into_wire())
    }
}

impl Eq for RequestBody {}

/// Its size only: a body is a partner's data.
impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestBody({} bytes)", self.len())
    }
}

/// Comparing two [`Buf`]s byte by byte without joining them.
trait ChunkEq: Buf + Sized {
    fn chunk_eq(mut self, mut other: impl Buf) -> bool {
        while self.has_remaining() {
            let n = self.chunk().len().min(other.chunk().len());
            if n == 0 || self.chunk()[..n] != other.chunk()[..n] {
                return false;
            }
            self.advance(n);
            other.advance(n);
        }
        !other.has_remaining()
    }
}

impl<B: Buf> ChunkEq for B {}

/// A body as a PostgreSQL `bytea`, written part by part into the message.
impl tokio_postgres::types::ToSql for RequestBody {
    fn to_sql(
        &self,
        _: &tokio_postgres::types::Type,
        out: &mut BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        for part in self.parts() {
            out.extend_from_slice(part);
        }
        Ok(tokio_postgres::types::IsNull::No)
    }

    tokio_postgres::types::accepts!(BYTEA);
    tokio_postgres::types::to_sql_checked!();
}

/// A body as an SQLite blob: borrowed when it is one buffer, else joined.
impl rusqlite::ToSql for RequestBody {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(if self.is_framed() {
            ToSqlOutput::Owned(Value::Blob(self.to_vec()))
        } else {
            ToSqlOutput::Borrowed(ValueRef::Blob(&self.middle))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed() -> (Bytes, RequestBody) {
        let text = Bytes::from(br#"{"profiles":[{"a":1},{"b":2}],"targetId":7}"#.to_vec());
        let body = RequestBody::framed(
            Bytes::from_static(br#"{"profiles":["#),
            text.slice(21..28),
            Bytes::from_static(br#"],"targetId":7}"#),
        );
        (text, body)
    }

    #[test]
    fn a_framed_body_is_its_parts_in_order() {
        let (_, body) = framed();
        let expected = br#"{"profiles":[{"b":2}],"targetId":7}"#;
        assert_eq!(body.len(), expected.len());
        assert_eq!(body.to_vec(), expected);
        assert_eq!(&body.to_bytes()[..], expected);
        let mut wire = body.clone().into_wire();
        assert_eq!(wire.copy_to_bytes(wire.remaining()), &expected[..]);
        assert_eq!(body, RequestBody::from(expected.to_vec()), "equal to the same bytes in one buffer");
        assert_ne!(body, RequestBody::from(r#"{"profiles":[{"b":3}],"targetId":7}"#));
        assert_ne!(body, RequestBody::from(r#"{"profiles":[{"b":2}]}"#));
    }

    #[test]
    fn an_owned_copy_lets_go_of_the_text() {
        let (text, body) = framed();
        let owned = body.owned();
        assert_eq!(owned, body);
        assert!(!owned.is_framed());
        drop(body);
        // Only `text` itself still holds its buffer: `Bytes::try_into_mut` succeeds only
        // for the last handle.
        assert!(text.try_into_mut().is_ok(), "the owned copy keeps no part of the text");
    }

    #[test]
    fn a_whole_body_is_not_copied() {
        let whole = Bytes::from(vec![b'x'; 64]);
        let body = RequestBody::from(whole.clone());
        assert!(!body.is_framed());
        assert_eq!(body.to_bytes().as_ptr(), whole.as_ptr());
        assert_eq!(body.owned().to_bytes().as_ptr(), whole.as_ptr());
        assert_eq!(format!("{body:?}"), "RequestBody(64 bytes)", "Debug shows no content");
    }
}
