//! Request bodies as clients send them, for the layers' tests.

use std::convert::Infallible;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::StreamBody;

/// A body of the given chunks, with no size announced (like a chunked upload).
pub fn chunked(
    chunks: Vec<&'static [u8]>,
) -> impl Body<Data = Bytes, Error = Infallible> + Unpin + Send + 'static {
    let frames = chunks
        .into_iter()
        .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from_static(c))));
    StreamBody::new(futures_util::stream::iter(frames))
}
