//! The functional core: `plan(desired, observed) -> Plan`.
//!
//! Pure: no I/O, no clock, never fails. Given the stored instance (spec, metadata, previous
//! status) and what the cloud looks like now, it says which steps to take next, what the
//! instance is waiting for, its phase, and whether it has converged.
//!
//! Invariants (checked by the tests below):
//! * a converged pair yields no step;
//! * a destructive step (`Step::is_destructive`) is planned only for a deleted instance;
//! * `DeleteDatabase` is planned only once the final snapshot exists and is available;
//! * teardown is strictly ordered: service → access point → final snapshot → database →
//!   log group, each waiting for the previous one to be gone;
//! * the service is scaled up or created only once the database is available (resume order:
//!   start RDS, then restore the task count).

use crate::cloud::names::ResourceNames;
use crate::cloud::{
    AccessPointState, DbState, Observed, ObservedDatabase, ObservedService, Rollout, ServiceState,
    SnapshotState, Step, WaitingOn,
};
use crate::model::{DesiredState, Instance, Phase, Spec, Tier};

/// CloudWatch Logs retention for instance log groups.
pub const LOG_RETENTION_DAYS: u32 = 30;

/// What to do next for one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub phase: Phase,
    /// The desired state is fully reached; nothing to do until something changes.
    pub converged: bool,
    /// What is in progress, most important first. Empty when converged.
    pub waits: Vec<Wait>,
    /// Something a retry will not fix (a failed database, a failed final snapshot).
    pub problem: Option<Problem>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    pub on: WaitingOn,
    /// CamelCase reason for the Progressing condition.
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// The database class each tier runs on.
pub fn db_instance_class(tier: Tier) -> &'static str {
    match tier {
        Tier::Standard => "db.t4g.micro",
        Tier::Professional => "db.t4g.small",
        Tier::Enterprise => "db.t4g.medium",
    }
}

/// Allocated RDS storage per tier, in GiB.
pub fn db_storage_gb(tier: Tier) -> u32 {
    match tier {
        Tier::Standard => 20,
        Tier::Professional => 50,
        Tier::Enterprise => 100,
    }
}

/// The WordPress container image for a spec.
pub fn image(spec: &Spec) -> String {
    format!(
        "wordpress:{}-php{}-apache",
        spec.configuration.wordpress_version, spec.configuration.php_version
    )
}

pub fn plan(inst: &Instance, obs: &Observed) -> Plan {
    let names = ResourceNames::for_key(&inst.key());
    if inst.is_deleted() {
        plan_teardown(&names, obs)
    } else {
        plan_live(inst, &names, obs)
    }
}

/// Accumulates steps and waits while the planner walks the resources.
#[derive(Default)]
struct Builder {
    steps: Vec<Step>,
    waits: Vec<Wait>,
    problem: Option<Problem>,
}

impl Builder {
    fn step(&mut self, step: Step) {
        self.steps.push(step);
    }

    fn wait(&mut self, on: WaitingOn, reason: &'static str, message: impl Into<String>) {
        self.waits.push(Wait {
            on,
            reason,
            message: message.into(),
        });
    }

    fn problem(&mut self, reason: &'static str, message: impl Into<String>) {
        self.problem = Some(Problem {
            reason,
            message: message.into(),
        });
    }

    fn is_idle(&self) -> bool {
        self.steps.is_empty() && self.waits.is_empty() && self.problem.is_none()
    }

    fn finish(self, phase: Phase, converged: bool) -> Plan {
        Plan {
            steps: self.steps,
            phase,
            converged,
            waits: self.waits,
            problem: self.problem,
        }
    }
}

fn plan_live(inst: &Instance, names: &ResourceNames, obs: &Observed) -> Plan {
    let spec = &inst.spec;
    let mut b = Builder::default();
    if obs.log_group.is_none() {
        b.step(Step::CreateLogGroup {
            name: names.log_group.clone(),
            retention_days: LOG_RETENTION_DAYS,
        });
        b.wait(
            WaitingOn::LogGroup,
            "CreatingLogGroup",
            "creating the CloudWatch log group",
        );
    }
    let access_point_id = plan_access_point(&mut b, names, obs);
    let db_ready = plan_database(&mut b, spec, names, obs.database.as_ref());
    match spec.state {
        DesiredState::Active => {
            plan_active_service(&mut b, inst, names, obs, access_point_id, db_ready)
        }
        DesiredState::Suspended => plan_suspended(&mut b, names, obs),
    }
    let converged = b.is_idle();
    let phase = live_phase(inst, obs, converged, b.problem.is_some());
    b.finish(phase, converged)
}

/// Returns the access point id once it is usable.
fn plan_access_point(b: &mut Builder, names: &ResourceNames, obs: &Observed) -> Option<String> {
    match &obs.access_point {
        None => {
            b.step(Step::CreateAccessPoint {
                root_path: names.access_point_root.clone(),
            });
            b.wait(
                WaitingOn::AccessPoint,
                "CreatingAccessPoint",
                "creating the EFS access point",
            );
            None
        }
        Some(ap) => match ap.state {
            AccessPointState::Available => Some(ap.id.clone()),
            AccessPointState::Creating => {
                b.wait(
                    WaitingOn::AccessPoint,
                    "WaitingForAccessPoint",
                    format!("EFS access point {} is being created", ap.id),
                );
                None
            }
            // Someone is deleting it; once it is gone a new one is created.
            AccessPointState::Deleting => {
                b.wait(
                    WaitingOn::AccessPoint,
                    "AccessPointDeleting",
                    format!(
                        "EFS access point {} is being deleted outside wpfleet",
                        ap.id
                    ),
                );
                None
            }
            AccessPointState::Error => {
                b.problem(
                    "AccessPointFailed",
                    format!("EFS access point {} is in the error state", ap.id),
                );
                None
            }
        },
    }
}

/// Returns the database once it is available (and of the right class when active).
fn plan_database<'a>(
    b: &mut Builder,
    spec: &Spec,
    names: &ResourceNames,
    db: Option<&'a ObservedDatabase>,
) -> Option<&'a ObservedDatabase> {
    let Some(db) = db else {
        b.step(Step::CreateDatabase {
            identifier: names.database.clone(),
            instance_class: db_instance_class(spec.tier).into(),
            allocated_storage_gb: db_storage_gb(spec.tier),
        });
        b.wait(
            WaitingOn::Database,
            "CreatingDatabase",
            "creating the RDS database",
        );
        return None;
    };
    let active = spec.state == DesiredState::Active;
    let wanted_class = db_instance_class(spec.tier);
    match &db.state {
        DbState::Available if active && db.instance_class != wanted_class => {
            b.step(Step::ModifyDatabase {
                identifier: db.identifier.clone(),
                instance_class: wanted_class.into(),
            });
            b.wait(
                WaitingOn::Database,
                "ModifyingDatabase",
                format!("changing the database class to {wanted_class}"),
            );
            Some(db)
        }
        DbState::Available => Some(db),
        DbState::Stopped if active => {
            b.step(Step::StartDatabase {
                identifier: db.identifier.clone(),
            });
            b.wait(
                WaitingOn::Database,
                "StartingDatabase",
                "starting the RDS database",
            );
            None
        }
        DbState::Stopped => None,
        DbState::Failed => {
            b.problem(
                "DatabaseFailed",
                format!("RDS database {} is in the failed state", db.identifier),
            );
            None
        }
        other => {
            b.wait(
                WaitingOn::Database,
                "WaitingForDatabase",
                format!("RDS database {} is {}", db.identifier, other.as_str()),
            );
            None
        }
    }
}

fn plan_active_service(
    b: &mut Builder,
    inst: &Instance,
    names: &ResourceNames,
    obs: &Observed,
    access_point_id: Option<String>,
    db: Option<&ObservedDatabase>,
) {
    let spec = &inst.spec;
    let want = spec.configuration.desired_count;
    let want_image = image(spec);
    match &obs.service {
        None => {
            // Tasks need the database endpoint and the access point; until both exist, the
            // waits (or problem) recorded for them keep the instance converging.
            if let (Some(ap), Some(db)) = (access_point_id, db)
                && db.state == DbState::Available
            {
                b.step(Step::CreateService {
                    name: names.service.clone(),
                    desired_count: want,
                    image: want_image,
                    access_point_id: ap,
                    db_endpoint: db.endpoint.clone().unwrap_or_default(),
                });
                b.wait(
                    WaitingOn::Tasks,
                    "StartingTasks",
                    format!("starting {want} WordPress tasks"),
                );
            }
        }
        Some(svc) if svc.state == ServiceState::Draining => b.wait(
            WaitingOn::Service,
            "ServiceDraining",
            format!("ECS service {} is draining; it will be recreated", svc.name),
        ),
        Some(svc) => {
            let db_available = db.is_some_and(|d| d.state == DbState::Available);
            if svc.desired_count != want || svc.image != want_image {
                if db_available {
                    b.step(Step::UpdateService {
                        name: svc.name.clone(),
                        desired_count: want,
                        image: want_image,
                    });
                }
                b.wait(
                    WaitingOn::Tasks,
                    "UpdatingService",
                    update_message(svc, want),
                );
            } else if !service_settled(svc) {
                b.wait(
                    WaitingOn::Tasks,
                    "WaitingForTasks",
                    format!(
                        "{} of {} tasks running, {} pending",
                        svc.running_count, want, svc.pending_count
                    ),
                );
            } else if let Some(healthy) = healthy_tasks(inst, obs).filter(|h| *h < want as usize) {
                b.wait(
                    WaitingOn::Tasks,
                    "WaitingForHealthyTasks",
                    format!("{healthy} of {want} tasks healthy"),
                );
            } else if healthy_tasks(inst, obs).is_none() {
                b.wait(
                    WaitingOn::Tasks,
                    "WaitingForHealthyTasks",
                    "task health not known yet",
                );
            }
        }
    }
}

fn update_message(svc: &ObservedService, want: u32) -> String {
    if svc.desired_count != want {
        format!("scaling from {} to {want} tasks", svc.desired_count)
    } else {
        "rolling out a new WordPress version".into()
    }
}

/// Running tasks that pass their health check, from this pass's task list or, when the
/// pass did not list tasks (a steady service), from the last list in status.
fn healthy_tasks(inst: &Instance, obs: &Observed) -> Option<usize> {
    let healthy = |status: &str, health: &str| status == "RUNNING" && health == "HEALTHY";
    match &obs.tasks {
        Some(tasks) => Some(
            tasks
                .iter()
                .filter(|t| healthy(&t.last_status, &t.health))
                .count(),
        ),
        None => inst.status.resources.service.as_ref().map(|s| {
            s.tasks
                .iter()
                .filter(|t| healthy(&t.status, &t.health))
                .count()
        }),
    }
}

/// Every wanted task runs and no deployment is in flight.
fn service_settled(svc: &ObservedService) -> bool {
    svc.running_count == svc.desired_count
        && svc.pending_count == 0
        && svc.rollout == Rollout::Completed
}

fn plan_suspended(b: &mut Builder, names: &ResourceNames, obs: &Observed) {
    let quiesced = match &obs.service {
        None => true,
        Some(svc) if svc.state == ServiceState::Draining => {
            b.wait(
                WaitingOn::Service,
                "ServiceDraining",
                format!("ECS service {} is draining", svc.name),
            );
            false
        }
        Some(svc) if svc.desired_count > 0 => {
            b.step(Step::UpdateService {
                name: svc.name.clone(),
                desired_count: 0,
                image: svc.image.clone(),
            });
            b.wait(
                WaitingOn::Tasks,
                "StoppingTasks",
                format!("stopping {} tasks", svc.running_count + svc.pending_count),
            );
            false
        }
        Some(svc) if svc.running_count + svc.pending_count > 0 => {
            b.wait(
                WaitingOn::Tasks,
                "StoppingTasks",
                format!(
                    "{} tasks still stopping",
                    svc.running_count + svc.pending_count
                ),
            );
            false
        }
        Some(_) => true,
    };
    // RDS is stopped only once no task can still be using it.
    if quiesced
        && let Some(db) = &obs.database
        && db.state == DbState::Available
    {
        b.step(Step::StopDatabase {
            identifier: names.database.clone(),
        });
        b.wait(
            WaitingOn::Database,
            "StoppingDatabase",
            "stopping the RDS database",
        );
    }
}

fn live_phase(inst: &Instance, obs: &Observed, converged: bool, problem: bool) -> Phase {
    let suspended = inst.spec.state == DesiredState::Suspended;
    if problem {
        return Phase::Failed;
    }
    if converged {
        return if suspended {
            Phase::Suspended
        } else {
            Phase::Active
        };
    }
    if suspended {
        return Phase::Suspending;
    }
    let db_down = obs.database.as_ref().is_some_and(|db| {
        matches!(
            db.state,
            DbState::Stopped | DbState::Stopping | DbState::Starting
        )
    });
    let missing = obs.log_group.is_none()
        || obs.access_point.is_none()
        || obs.database.is_none()
        || obs.service.is_none();
    match inst.status.phase {
        Phase::PendingProvisioning | Phase::Provisioning => Phase::Provisioning,
        Phase::Suspended | Phase::Suspending | Phase::Resuming => Phase::Resuming,
        _ if missing => Phase::Provisioning,
        _ if db_down => Phase::Resuming,
        _ => Phase::Scaling,
    }
}

fn plan_teardown(names: &ResourceNames, obs: &Observed) -> Plan {
    let mut b = Builder::default();
    let gone = teardown_service(&mut b, obs)
        && teardown_access_point(&mut b, obs)
        && teardown_database(&mut b, names, obs)
        && teardown_log_group(&mut b, obs);
    let phase = if gone {
        Phase::Deprovisioned
    } else {
        Phase::Deprovisioning
    };
    b.finish(phase, gone)
}

/// Each teardown stage returns whether its resource is gone, so the next may start.
fn teardown_service(b: &mut Builder, obs: &Observed) -> bool {
    let Some(svc) = &obs.service else { return true };
    if svc.state == ServiceState::Active {
        b.step(Step::DeleteService {
            name: svc.name.clone(),
        });
    }
    b.wait(
        WaitingOn::Service,
        "DeletingService",
        format!("deleting ECS service {}", svc.name),
    );
    false
}

fn teardown_access_point(b: &mut Builder, obs: &Observed) -> bool {
    let Some(ap) = &obs.access_point else {
        return true;
    };
    if ap.state != AccessPointState::Deleting {
        b.step(Step::DeleteAccessPoint { id: ap.id.clone() });
    }
    b.wait(
        WaitingOn::AccessPoint,
        "DeletingAccessPoint",
        format!("deleting EFS access point {}", ap.id),
    );
    false
}

fn teardown_database(b: &mut Builder, names: &ResourceNames, obs: &Observed) -> bool {
    let Some(db) = &obs.database else { return true };
    let deletable = matches!(db.state, DbState::Available | DbState::Stopped);
    match &obs.final_snapshot {
        _ if db.state == DbState::Deleting => b.wait(
            WaitingOn::Database,
            "DeletingDatabase",
            format!("deleting RDS database {}", db.identifier),
        ),
        None if deletable => {
            b.step(Step::SnapshotDatabase {
                identifier: db.identifier.clone(),
                snapshot_id: names.final_snapshot.clone(),
            });
            b.wait(
                WaitingOn::Snapshot,
                "TakingFinalSnapshot",
                format!("taking final snapshot {}", names.final_snapshot),
            );
        }
        Some(snap) if snap.state == SnapshotState::Creating => b.wait(
            WaitingOn::Snapshot,
            "TakingFinalSnapshot",
            format!("final snapshot {} is being created", snap.id),
        ),
        Some(snap) if snap.state == SnapshotState::Failed => b.problem(
            "FinalSnapshotFailed",
            format!(
                "final snapshot {} failed; the database is kept until a person acts",
                snap.id
            ),
        ),
        Some(snap) if deletable => {
            b.step(Step::DeleteDatabase {
                identifier: db.identifier.clone(),
                final_snapshot_id: snap.id.clone(),
            });
            b.wait(
                WaitingOn::Database,
                "DeletingDatabase",
                format!("deleting RDS database {}", db.identifier),
            );
        }
        // Starting, stopping, creating, …: wait until it can be snapshotted or deleted.
        _ => b.wait(
            WaitingOn::Database,
            "WaitingForDatabase",
            format!(
                "RDS database {} is {}; waiting to remove it",
                db.identifier,
                db.state.as_str()
            ),
        ),
    }
    false
}

fn teardown_log_group(b: &mut Builder, obs: &Observed) -> bool {
    let Some(lg) = &obs.log_group else {
        return true;
    };
    b.step(Step::DeleteLogGroup {
        name: lg.name.clone(),
    });
    b.wait(
        WaitingOn::LogGroup,
        "DeletingLogGroup",
        format!("deleting log group {}", lg.name),
    );
    false
}

#[cfg(test)]
mod tests;
