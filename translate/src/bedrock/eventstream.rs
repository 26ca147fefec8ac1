//! Decoding of the `application/vnd.amazon.eventstream` framing ConverseStream answers in:
//! binary frames (prelude with lengths and CRC, typed headers, payload, message CRC), which
//! arrive split across and packed into HTTP body chunks at random.

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use bytes::{Bytes, BytesMut};

use super::bad;
use crate::TranslateError;

/// The largest frame the decoder waits for: 16 MiB, the event-stream format's limit on a
/// message. A corrupt length prefix would otherwise make it buffer without end, since the
/// checksums can only be checked once the whole frame is in.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Turns an event-stream body, pushed chunk by chunk as it arrives, into its messages.
///
/// Framing and CRC checks are `aws-smithy-eventstream`'s; this type keeps the bytes of the
/// frame in progress between chunks.
#[derive(Debug, Default)]
pub struct EventStreamDecoder {
    decoder: MessageFrameDecoder,
    buf: BytesMut,
    /// Bytes pushed that belong to no complete message yet (some may sit in the decoder).
    pending: usize,
}

impl EventStreamDecoder {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next chunk of the body and returns the messages it completed, each as
    /// `(event_type, message_type, payload)`:
    /// - an event: `(":event-type", "event", payload)`, e.g. `("contentBlockDelta", "event", {…})`;
    /// - an exception: `(":exception-type", "exception", payload)`, e.g.
    ///   `("throttlingException", "exception", {"message": …})`;
    /// - an error: `(":error-code", "error", {"message": ":error-message"})`, the payload made
    ///   from the headers in the shape of an exception's.
    ///
    /// # Errors
    /// `BadResponse` for a frame that fails its checksums or is malformed, a message without
    /// the headers above, or a frame longer than [`MAX_FRAME_BYTES`]. The stream cannot be
    /// resynchronised after that.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<(String, String, Bytes)>, TranslateError> {
        self.buf.extend_from_slice(bytes);
        self.pending += bytes.len();
        let mut out = Vec::new();
        loop {
            match self.decoder.decode_frame(&mut self.buf) {
                Ok(DecodedFrame::Complete(message)) => {
                    self.pending = self.buf.len();
                    out.push(split(&message)?);
                }
                Ok(DecodedFrame::Incomplete) => break,
                Err(e) => return Err(bad(format!("Bedrock event stream is corrupt: {e}"))),
            }
        }
        if self.buf.len() > MAX_FRAME_BYTES {
            return Err(bad("Bedrock event stream frame is longer than 16 MiB"));
        }
        Ok(out)
    }

    /// Whether bytes of an unfinished frame are waiting: at the end of the body, a stream cut
    /// short.
    #[must_use]
    pub fn has_partial_frame(&self) -> bool {
        self.pending > 0
    }
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    let header = message.headers().iter().find(|h| h.name().as_str() == name)?;
    header.value().as_string().ok().map(|s| s.as_str())
}

fn split(message: &Message) -> Result<(String, String, Bytes), TranslateError> {
    let message_type = header(message, ":message-type").unwrap_or("event");
    let (name, payload) = match message_type {
        "event" => (header(message, ":event-type"), message.payload().clone()),
        "exception" => (header(message, ":exception-type"), message.payload().clone()),
        "error" => {
            let text = header(message, ":error-message").unwrap_or("");
            let payload = serde_json::json!({ "message": text }).to_string();
            (header(message, ":error-code"), Bytes::from(payload))
        }
        other => return Err(bad(format!("Bedrock event stream message of unknown type `{other}`"))),
    };
    let name =
        name.ok_or_else(|| bad(format!("Bedrock event stream {message_type} without its type header")))?;
    Ok((name.to_owned(), message_type.to_owned(), payload))
}
