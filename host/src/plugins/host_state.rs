//! What a plugin's store holds: a WASI context that grants nothing but
//! clocks and random numbers, the memory cap, and the plugin's name for the
//! `host.log` import.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::host::{self, LogLevel};

/// Caps linear memory and remembers whether a growth was refused, so a trap
/// that follows can be reported as running out of memory.
#[derive(Debug)]
pub struct MemoryCap {
    pub max_bytes: usize,
    pub refused: bool,
    /// Largest memory size reached, for `plugin test`'s report.
    pub peak_bytes: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = true;
            return Ok(false);
        }
        self.peak_bytes = self.peak_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Keeps the last bytes a plugin wrote to stderr, so a trap can be reported
/// with the plugin's own last words (a Rust panic message, say). Writing
/// never fails, however much a plugin writes.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<Vec<u8>>>);

const STDERR_TAIL: usize = 1024;

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        buf.extend_from_slice(bytes);
        if buf.len() > STDERR_TAIL {
            let cut = buf.len() - STDERR_TAIL;
            buf.drain(..cut);
        }
    }

    /// The captured text on one line.
    pub fn text(&self) -> String {
        let buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

/// `host.log` lines kept for `plugin test`'s report: level and message, the
/// first [`LOG_CAPTURE_LINES`] of them.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<(LogLevel, String)>>>);

/// Lines a [`LogCapture`] keeps.
pub const LOG_CAPTURE_LINES: usize = 1000;

impl LogCapture {
    fn push(&self, level: LogLevel, message: &str) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() < LOG_CAPTURE_LINES {
            lines.push((level, message.to_string()));
        }
    }

    /// The lines kept so far, in order, and forgets them.
    pub fn take(&self) -> Vec<(LogLevel, String)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

pub struct HostState {
    pub plugin: Arc<str>,
    /// Where `host.log` lines also go, if anywhere.
    pub log_capture: Option<LogCapture>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub memory: MemoryCap,
    pub stderr: StderrTail,
}

impl HostState {
    pub fn new(plugin: Arc<str>, max_memory: usize) -> Self {
        // The default builder grants no preopened directories, no environment,
        // no arguments and no network (the socket check denies everything);
        // clocks and random numbers work. Stdout is discarded; the tail of
        // stderr is kept for error reports.
        let stderr = StderrTail::default();
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        HostState {
            plugin,
            log_capture: None,
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap {
                max_bytes: max_memory,
                refused: false,
                peak_bytes: 0,
            },
            stderr,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        // Bound what a plugin can put in one log line.
        let message: String = message.chars().take(2000).collect();
        if let Some(capture) = &self.log_capture {
            capture.push(level, &message);
        }
        let plugin = &*self.plugin;
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }
}
