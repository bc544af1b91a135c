//! The egress proxy a sandbox in network mode `proxy` reaches through its only listener.
