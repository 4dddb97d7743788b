//! The codec of every generated service (`build.rs` names it): tonic-prost's `ProstCodec`, except that a
//! message that is not valid protobuf (a string that is not UTF-8, a truncated field) is the sender's
//! mistake, INVALID_ARGUMENT, rather than INTERNAL, which would tell the client to blame the server.
//! Unary calls and every message of a client stream are decoded here. The generated clients (tests,
//! benches) share it, so there a malformed reply would also read INVALID_ARGUMENT.

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

#[derive(Debug, Clone)]
pub struct ProstCodec<T, U> {
    inner: tonic_prost::ProstCodec<T, U>,
}

impl<T, U> Default for ProstCodec<T, U> {
    fn default() -> Self {
        Self {
            inner: tonic_prost::ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for ProstCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder {
            inner: self.inner.decoder(),
        }
    }
}

/// `ProstDecoder` with its errors turned into INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct RequestDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(not_valid::<U>)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

/// `ProstDecoder` fails only on a `prost::DecodeError`, as "failed to decode Protobuf message: <why>".
fn not_valid<U>(decode_error: Status) -> Status {
    let message = std::any::type_name::<U>().rsplit("::").next().unwrap_or("");
    let why = decode_error.message();
    let why = why
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(why);
    Status::invalid_argument(format!(
        "the request is not a valid {message} protobuf message: {why}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    #[test]
    fn decode_errors_become_invalid_argument_naming_the_message() {
        let error = pb::UpsertUserRequest::decode(&[0x0a, 0x05, b'a'][..]).unwrap_err();
        let status = not_valid::<pb::UpsertUserRequest>(Status::internal(error.to_string()));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("the request is not a valid UpsertUserRequest protobuf message: "),
            "{}",
            status.message()
        );
        assert!(!status.message().contains("failed to decode"));
    }
}
