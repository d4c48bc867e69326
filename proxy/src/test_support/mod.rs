//! What several modules' tests share: certificates from a throwaway CA, an upstream state with a
//! chosen policy, bodies as clients send them. Test code only; above every layer.

pub mod bodies;
pub mod certificates;
pub mod upstream;
