//! mTLS between proxies, at the transport: [`connect`] originates it to a peer proxy (checking
//! the identity discovery promised), [`client_hello`] reads whom a TLS connection is for,
//! [`accept`] terminates it, and [`transport`] is what travels first inside it (the ALPN of the
//! transport, the tcp transport's header). The HTTP carried over it lives in `http`
//! (`peer_client`, `mesh_encoding`); serving it to the app in `inbound::termination`.

pub mod accept;
pub mod client_hello;
pub mod connect;
pub mod transport;
