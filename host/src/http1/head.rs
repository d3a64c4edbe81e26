//! Header maps that share the bytes of the head they were parsed from.
//!
//! httparse hands out slices of the read buffer. Recording where each name
//! and value sits, then freezing the head once, lets every value point into
//! that one copy: a request or response head costs one allocation for its
//! bytes and one for its map, however many headers it has.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Where one header's name and value sit in a head: offsets and lengths.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    name_at: u32,
    name_len: u32,
    value_at: u32,
    value_len: u32,
}

impl Span {
    pub fn name<'h>(&self, head: &'h [u8]) -> &'h [u8] {
        &head[self.name_at as usize..(self.name_at + self.name_len) as usize]
    }
}

/// The spans of one head, on the stack: parsing allocates nothing for
/// them. Holds at most `N`; the parsers never parse more headers than that.
pub struct Spans<const N: usize> {
    slots: [MaybeUninit<Span>; N],
    len: usize,
}

impl<const N: usize> Spans<N> {
    pub fn new() -> Self {
        Spans {
            slots: [const { MaybeUninit::uninit() }; N],
            len: 0,
        }
    }

    /// Records where the names and values of `headers`, parsed from a head
    /// starting at `base`, sit in it.
    pub fn record(&mut self, headers: &[httparse::Header<'_>], base: usize) {
        let at = |p: *const u8| (p as usize - base) as u32;
        self.len = 0;
        for (slot, h) in self.slots.iter_mut().zip(headers) {
            slot.write(Span {
                name_at: at(h.name.as_ptr()),
                name_len: h.name.len() as u32,
                value_at: at(h.value.as_ptr()),
                value_len: h.value.len() as u32,
            });
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[Span] {
        // SAFETY: `record` wrote the first `len` slots, and only it sets
        // `len`; `Span` is plain data.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr().cast::<Span>(), self.len) }
    }
}

/// Header names the wire layer reads itself and never hands on: the
/// framing is re-encoded from the decision made while parsing, and a
/// request's host is carried in its (normalized) target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Managed {
    /// `Content-Length` and `Transfer-Encoding`.
    Framing,
    /// Those, and `Host`.
    FramingAndHost,
}

impl Managed {
    fn skips(self, name: &[u8]) -> bool {
        name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || (self == Managed::FramingAndHost && name.eq_ignore_ascii_case(b"host"))
    }
}

/// The header map of a frozen head, its values sharing the head's bytes,
/// without the `managed` headers and with room for `extra` more entries.
pub fn header_map(
    head: &Bytes,
    spans: &[Span],
    managed: Managed,
    extra: usize,
) -> Result<HeaderMap, &'static str> {
    let mut map = HeaderMap::with_capacity(spans.len() + extra);
    for s in spans {
        let name = s.name(head);
        if managed.skips(name) {
            continue;
        }
        let name = HeaderName::from_bytes(name).map_err(|_| "invalid header name")?;
        let value = HeaderValue::from_maybe_shared(
            head.slice(s.value_at as usize..(s.value_at + s.value_len) as usize),
        )
        .map_err(|_| "invalid header value")?;
        map.append(name, value);
    }
    Ok(map)
}
