//! Buffers of busy connections, freed when they are idle.
//!
//! A client connection waiting for its next request holds no buffer: its
//! read buffer is freed as soon as a read finds nothing more, and
//! allocated again when bytes arrive, as nginx frees an idle keep-alive
//! connection's header buffer. A pooled connection to a backend keeps its
//! buffers while it is reused, and the pool's sweep frees them once it has
//! been idle for [`IDLE_RELEASE`]. Thousands of idle connections then cost
//! their sockets and tasks, not thousands of buffers. (Keeping a client
//! connection's buffers until it had been idle a while was measured too:
//! a burst of connections then holds all their buffers at once, and the
//! allocator keeps that peak.)

use bytes::{Bytes, BytesMut};

/// A read buffer's first size: most request and response heads fit (nginx's
/// `client_header_buffer_size` is 1k too), and it is an allocation the
/// allocator serves from its fast path; heads and bodies grow it as they
/// need.
pub const READ_BUFFER: usize = 1024;
/// A head's encoding space to start with.
const HEAD_SPACE: usize = 512;
/// Body pieces gathered for one vectored write, at most (a chunk is three).
pub const MAX_PENDING: usize = 32;
/// How long a connection sits idle before its buffers are freed.
pub const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_secs(1);

/// A read buffer for a connection that has bytes coming.
pub fn read_buffer() -> BytesMut {
    BytesMut::with_capacity(READ_BUFFER)
}

/// Frees an idle connection's read buffer, unless bytes are still buffered
/// in it (pipelined requests keep theirs).
pub fn rest(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
}

/// Encoding space for a head.
pub fn head_space() -> Vec<u8> {
    Vec::with_capacity(HEAD_SPACE)
}

/// A response writer's space: the head being encoded, and the body pieces
/// of one vectored write; made per response.
pub struct WriteSpace {
    pub out: Vec<u8>,
    pub pending: Vec<Bytes>,
}

impl WriteSpace {
    pub fn new() -> WriteSpace {
        WriteSpace {
            out: head_space(),
            // A head and one piece (three if chunked) is the usual response.
            pending: Vec::with_capacity(4),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_buffer_is_freed_unless_bytes_wait_in_it() {
        let mut buf = read_buffer();
        assert!(buf.capacity() >= READ_BUFFER);
        rest(&mut buf);
        assert_eq!(buf.capacity(), 0);
        let mut busy = read_buffer();
        busy.extend_from_slice(b"GET /");
        rest(&mut busy);
        assert_eq!(&busy[..], b"GET /", "buffered bytes keep their buffer");
    }
}
