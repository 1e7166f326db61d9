//! Placement (stub, filled below).
