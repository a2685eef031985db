//! Operations (compose, decompose, mount, unmount, failover): an intent event starts one, an
//! outcome event ends it; and the kinds of orders an operator can give, for request ids.

use rkyv::{Archive, Deserialize as RkyvDeserialize, Serialize as RkyvSerialize};
use serde::{Deserialize, Serialize};

use super::event::{Made, MountSpec};
use super::failure::Failure;
use super::ids::{DeviceId, OperationId, PortId, SystemName};

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Compose {
        devices: Vec<(DeviceId, PortId)>,
    },
    Decompose {
        devices: Vec<DeviceId>,
    },
    Mount {
        // Boxed: the spec would double the size of every operation, and State's maps move
        // operations around as they change.
        mount: Box<MountSpec>,
    },
    Unmount {
        target: String,
    },
    Failover {
        from: DeviceId,
        to: DeviceId,
        port: PortId,
    },
}

impl OperationKind {
    pub fn name(&self) -> &'static str {
        self.order().name()
    }

    /// The order that starts an operation of this kind.
    pub fn order(&self) -> OrderKind {
        match self {
            OperationKind::Compose { .. } => OrderKind::Compose,
            OperationKind::Decompose { .. } => OrderKind::Decompose,
            OperationKind::Mount { .. } => OrderKind::Mount,
            OperationKind::Unmount { .. } => OrderKind::Unmount,
            OperationKind::Failover { .. } => OrderKind::Failover,
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    Failed(Failure),
}

/// An operation: its intent and, once it has one, its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Operation {
    pub id: OperationId,
    pub system: SystemName,
    pub kind: OperationKind,
    /// Who asked for it, and its request id.
    pub made: Made,
    /// Sequence of the intent event.
    pub requested_at: u64,
    /// Sequence of the outcome event, once there is one.
    pub finished_at: Option<u64>,
    pub outcome: Option<Outcome>,
}

/// The orders an operator can give (the verbs of every door).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    SetIdentity,
    CreateTenant,
    CreateSystem,
    DeleteSystem,
    Compose,
    Decompose,
    Mount,
    Unmount,
    Failover,
    SetService,
    CreateAccount,
    ChangeAccount,
    DeleteAccount,
    OpenSession,
    CloseSession,
    CreateSubscription,
    DeleteSubscription,
    Reserve,
    EndReservation,
    ClearAlarm,
    Drain,
    SetManagementNetwork,
    Power,
    SetDirectory,
    ChangeDirectoryUser,
}

impl OrderKind {
    pub fn name(self) -> &'static str {
        match self {
            OrderKind::SetIdentity => "set_identity",
            OrderKind::CreateTenant => "create_tenant",
            OrderKind::CreateSystem => "create_system",
            OrderKind::DeleteSystem => "delete_system",
            OrderKind::Compose => "compose",
            OrderKind::Decompose => "decompose",
            OrderKind::Mount => "mount",
            OrderKind::Unmount => "unmount",
            OrderKind::Failover => "failover",
            OrderKind::SetService => "set_service",
            OrderKind::CreateAccount => "create_account",
            OrderKind::ChangeAccount => "change_account",
            OrderKind::DeleteAccount => "delete_account",
            OrderKind::OpenSession => "open_session",
            OrderKind::CloseSession => "close_session",
            OrderKind::CreateSubscription => "create_subscription",
            OrderKind::DeleteSubscription => "delete_subscription",
            OrderKind::Reserve => "reserve",
            OrderKind::EndReservation => "end_reservation",
            OrderKind::ClearAlarm => "clear_alarm",
            OrderKind::Drain => "drain",
            OrderKind::SetManagementNetwork => "set_management_network",
            OrderKind::Power => "power",
            OrderKind::SetDirectory => "set_directory",
            OrderKind::ChangeDirectoryUser => "change_directory_user",
        }
    }
}

/// What a request id was used for: the order, the operation it started (if it started one) and
/// the sequence of its first event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Requested {
    pub order: OrderKind,
    pub op: Option<OperationId>,
    pub sequence: u64,
}
