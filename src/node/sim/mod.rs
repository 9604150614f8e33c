//! node::sim: the in-process cluster simulation (test only).

mod net;
