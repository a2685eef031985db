//! The doors operators come in by.

pub mod control;
