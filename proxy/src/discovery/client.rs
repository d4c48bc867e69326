//! The discovery service's client: one Watch stream per key over a shared channel.
