//! A response body compressed as it streams: each data frame goes through
//! the encoder and what the encoder has produced goes out at once. Nothing
//! waits for the whole body. When the backend pauses (its next frame is not
//! ready) the encoder is flushed, so a slow stream (server-sent events, a
//! long poll) reaches the client as it is written rather than when the
//! encoder's window fills; a fast one compresses in large blocks.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut, buf::Writer};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::CodingMetrics;
use crate::config::Coding;
use crate::http1::{BoxBody, BoxError};

/// Compression levels per coding (`compression.*_level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Levels {
    pub gzip: u32,
    pub brotli: u32,
    pub zstd: i32,
}

/// Brotli's window (log2 bytes); 22 is its default (4 MiB).
const BROTLI_WINDOW: u32 = 22;

/// The three encoders behind one interface, each writing into a buffer the
/// body hands out without copying.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Writer<BytesMut>>),
    Br(Box<brotli::CompressorWriter<Writer<BytesMut>>>),
    Zstd(zstd::stream::write::Encoder<'static, Writer<BytesMut>>),
}

impl Encoder {
    fn new(coding: Coding, levels: Levels) -> std::io::Result<Encoder> {
        let out = BytesMut::with_capacity(16 * 1024).writer();
        Ok(match coding {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::new(levels.gzip),
            )),
            Coding::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                out,
                16 * 1024,
                levels.brotli,
                BROTLI_WINDOW,
            ))),
            Coding::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(out, levels.zstd)?),
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Encoder::Gzip(e) => e,
            Encoder::Br(e) => e.as_mut(),
            Encoder::Zstd(e) => e,
        }
    }

    fn output(&mut self) -> &mut BytesMut {
        match self {
            Encoder::Gzip(e) => e.get_mut().get_mut(),
            Encoder::Br(e) => e.get_mut().get_mut(),
            Encoder::Zstd(e) => e.get_mut().get_mut(),
        }
    }

    /// What the encoder has produced so far, taken out of its buffer.
    fn take(&mut self) -> Bytes {
        self.output().split().freeze()
    }

    /// Ends the stream: the encoder's last bytes and the format's trailer.
    fn finish(self) -> std::io::Result<Bytes> {
        let out = match self {
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Br(e) => e.into_inner(),
            Encoder::Zstd(e) => e.finish()?,
        };
        Ok(out.into_inner().freeze())
    }
}

/// A body compressed with one coding as it streams.
pub struct Compressed {
    inner: BoxBody,
    /// `None` once the stream is finished.
    encoder: Option<Encoder>,
    /// Input went in since the last flush.
    unflushed: bool,
    /// Trailers of the inner body, sent after the last data.
    trailers: Option<HeaderMap>,
    metrics: CodingMetrics,
}

impl Compressed {
    pub fn new(
        inner: BoxBody,
        coding: Coding,
        levels: Levels,
        metrics: CodingMetrics,
    ) -> Result<Compressed, (BoxBody, std::io::Error)> {
        let encoder = match Encoder::new(coding, levels) {
            Ok(e) => e,
            Err(e) => return Err((inner, e)),
        };
        metrics.responses.increment(1);
        Ok(Compressed {
            inner,
            encoder: Some(encoder),
            unflushed: false,
            trailers: None,
            metrics,
        })
    }

    fn out(&self, bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.metrics.bytes_out.increment(bytes.len() as u64);
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }
}

fn encode_error(e: std::io::Error) -> BoxError {
    format!("compressing the response: {e}").into()
}

impl Body for Compressed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.metrics.bytes_in.increment(data.len() as u64);
                        encoder.writer().write_all(&data).map_err(encode_error)?;
                        this.unflushed = true;
                        // Output now does not mean the input is all out:
                        // only a flush clears `unflushed`.
                        let out = encoder.take();
                        if !out.is_empty() {
                            return this.out(out);
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            this.trailers = Some(t);
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    let Some(encoder) = this.encoder.take() else {
                        continue;
                    };
                    let last = encoder.finish().map_err(encode_error)?;
                    if !last.is_empty() {
                        return this.out(last);
                    }
                }
                Poll::Pending => {
                    if this.unflushed {
                        this.unflushed = false;
                        encoder.writer().flush().map_err(encode_error)?;
                        let out = encoder.take();
                        if !out.is_empty() {
                            return this.out(out);
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Read;

    fn levels() -> Levels {
        Levels {
            gzip: 5,
            brotli: 4,
            zstd: 3,
        }
    }

    async fn compress(coding: Coding, chunks: Vec<&'static [u8]>) -> Vec<u8> {
        let stream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from_static(c)))),
        );
        let inner = http_body_util::StreamBody::new(stream).boxed_unsync();
        let body = Compressed::new(inner, coding, levels(), CodingMetrics::for_coding(coding))
            .map_err(|(_, e)| e)
            .expect("encoder");
        body.collect().await.expect("body").to_bytes().to_vec()
    }

    fn decode(coding: Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .map(drop),
            Coding::Br => brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .map(drop),
            Coding::Zstd => zstd::stream::read::Decoder::new(data)
                .and_then(|mut d| d.read_to_end(&mut out))
                .map(drop),
        }
        .expect("decodes");
        out
    }

    #[tokio::test]
    async fn each_coding_round_trips_across_frames() {
        let text: &'static [u8] = b"{\"name\":\"switchyard\",\"values\":[1,2,3,4,5,6,7,8,9]}\n";
        let chunks: Vec<&'static [u8]> = std::iter::repeat_n(text, 500).collect();
        let whole: Vec<u8> = chunks.concat();
        for coding in [Coding::Gzip, Coding::Br, Coding::Zstd] {
            let encoded = compress(coding, chunks.clone()).await;
            assert!(encoded.len() * 10 < whole.len(), "{coding:?} compresses");
            assert_eq!(decode(coding, &encoded), whole, "{coding:?}");
        }
    }

    #[tokio::test]
    async fn an_empty_body_is_a_valid_empty_stream() {
        for coding in [Coding::Gzip, Coding::Br, Coding::Zstd] {
            let encoded = compress(coding, vec![]).await;
            assert!(!encoded.is_empty());
            assert_eq!(decode(coding, &encoded), b"");
        }
    }
}
