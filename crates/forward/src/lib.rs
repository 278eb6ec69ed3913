//! idbridge-forward: cursor-driven deliveries out of the event log.
//!
//! The event log is the outbox (ARCHITECTURE.md): each webhook endpoint owns a cursor (a log
//! seq) stored next to its delivery state, and the cursor moves only after the receiver answered
//! 2xx and the move was durably committed. A crash, a restart or a receiver outage therefore
//! loses nothing; at worst an event is delivered twice (receivers dedupe by event id, as with
//! WorkOS).
//!
//! Entry point for the server: [`spawn`] with a [`DeliveryConfig`].
//!
//! [`scim_push`] is the second kind of consumer: every directory pushed into a remote SCIM 2.0
//! endpoint (a WorkOS "Custom SCIM v2.0" directory), with its own cursor per target.

#![forbid(unsafe_code)]

mod config;
mod error;
mod records;
pub mod scim_push;
mod sign;
mod worker;

pub use config::{Backoff, DeliveryConfig};
pub use error::{DeliveryError, ForwardError};
pub use records::{DeliveryState, DeliveryStates};
pub use sign::{sign, signature_header};
pub use worker::{spawn, DeliveryClient, DeliveryWorker, SIGNATURE_HEADER};
