//! Delivery under faults: a receiver that fails on purpose at the byte level, and suites
//! that push many events through local mode while it fails and the process is killed.

mod faulty;
mod faulty_tests;
mod local;
mod verify;
