//! The functional core: `plan(input, observed) -> Plan`.
//!
//! Pure: no I/O, no clock, never fails. Given the stored instance (spec, metadata, previous
//! status), its backups in flight, and what the cloud looks like now, it says which steps
//! to take next, what the instance is waiting for, its phase, and whether it has converged.
//!
//! Data generations ("epochs"): RDS and AWS Backup cannot restore in place, so a restore
//! creates a new database and a new EFS directory named after the restore request
//! (`names::epoch_of`). The epoch in use follows from spec and status (`data_generation`);
//! resources of other epochs are *superseded* and retired once nothing uses them.
//!
//! Invariants (checked by the tests):
//! * a converged pair yields no step except housekeeping (backups in flight, retiring
//!   data a completed restore superseded);
//! * a destructive step (`Step::is_destructive`) is planned only for a deleted instance or
//!   for a superseded data resource, never for the resources of the epoch in use;
//! * a database is deleted only once a snapshot of it (final or retirement) is available;
//! * teardown is strictly ordered: service → access point → final snapshot → database →
//!   log group, each waiting for the previous one to be gone;
//! * the service is created or scaled up only while its database is available (resume
//!   order: start RDS, then restore the task count);
//! * a restore first stops every task, so nothing writes while data is restored.

mod backups;
pub mod health;
#[cfg(test)]
mod properties;
mod restore;
#[cfg(test)]
mod tests;

use crate::cloud::names::{ResourceNames, epoch_of};
use crate::cloud::{
    AccessPointState, DbState, Observed, ObservedAccessPoint, ObservedDatabase, ObservedService,
    ObservedSnapshot, ServiceState, SnapshotState, Step, WaitingOn,
};
use crate::model::{Backup, DesiredState, Instance, Phase, RestoreSpec, RestoreStage, Spec, Tier};

pub use backups::BackupProgress;
pub use restore::RestoreProgress;

/// CloudWatch Logs retention for instance log groups.
pub const LOG_RETENTION_DAYS: u32 = 30;

/// What `plan` reads besides the cloud.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub inst: &'a Instance,
    /// The instance's backups in flight (PENDING or RUNNING).
    pub backups: &'a [Backup],
    /// The backup `spec.restore` names, when a restore is pending (`None` if not found).
    pub restore_from: Option<&'a Backup>,
}

impl<'a> PlanInput<'a> {
    pub fn new(inst: &'a Instance) -> Self {
        Self {
            inst,
            backups: &[],
            restore_from: None,
        }
    }
}

/// What to do next for one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub phase: Phase,
    /// The desired state (spec) is fully reached. Housekeeping (backups in flight,
    /// retiring data a restore superseded) does not count.
    pub converged: bool,
    /// What is in progress, most important first. Empty when nothing is in flight.
    pub waits: Vec<Wait>,
    /// Something a retry will not fix (a failed database, a failed final snapshot).
    pub problem: Option<Problem>,
    /// Backups whose progress changed this pass (to be written back).
    pub backups: Vec<BackupProgress>,
    /// The pending (or just finished) restore, when there is one.
    pub restore: Option<RestoreProgress>,
    /// Something needed the RDS snapshots, which this observation left out: nothing was
    /// decided about it (no step, a wait); look again with them at once.
    pub needs_snapshots: bool,
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

/// The epoch in use, and the restore still to do, if any.
pub fn data_generation(inst: &Instance) -> (Option<String>, Option<&RestoreSpec>) {
    let Some(wanted) = &inst.spec.restore else {
        return (None, None);
    };
    match &inst.status.restore {
        Some(s) if s.request_id == wanted.request_id => match s.stage {
            RestoreStage::Completed => (Some(epoch_of(&wanted.request_id)), None),
            RestoreStage::Failed => (s.previous_epoch.clone(), None),
            _ => (s.previous_epoch.clone(), Some(wanted)),
        },
        Some(earlier) if earlier.stage == RestoreStage::Completed => {
            (Some(epoch_of(&earlier.request_id)), Some(wanted))
        }
        Some(earlier) => (earlier.previous_epoch.clone(), Some(wanted)),
        None => (None, Some(wanted)),
    }
}

pub fn plan(input: &PlanInput<'_>, obs: &Observed) -> Plan {
    let inst = input.inst;
    let names = ResourceNames::for_key(&inst.key());
    let (epoch, pending_restore) = data_generation(inst);
    let current = Current::find(&names, epoch.as_deref(), obs);
    let mut b = Builder::default();
    if inst.is_deleted() {
        plan_teardown(&mut b, obs);
        let gone = b.is_idle();
        backups::fail_all(&mut b, input.backups, "the instance was deleted first");
        let phase = if gone {
            Phase::Deprovisioned
        } else {
            Phase::Deprovisioning
        };
        return b.finish(phase, gone);
    }
    plan_log_group(&mut b, &names, obs);
    if let Some(wanted) = pending_restore {
        let ctx = restore::Ctx {
            inst,
            names: &names,
            obs,
            current: &current,
            wanted,
            previous_epoch: epoch,
            backup: input.restore_from,
        };
        let progress = restore::plan(&mut b, &ctx);
        let converged = b.is_idle();
        let phase = if progress.stage == RestoreStage::Completed {
            // Retire what the restore superseded right away, as housekeeping.
            let epoch = epoch_of(&wanted.request_id);
            plan_retirement(&mut b, &Current::find(&names, Some(&epoch), obs), obs);
            live_phase(inst, obs, converged, b.problem.is_some())
        } else {
            Phase::Restoring
        };
        b.restore = Some(progress);
        return b.finish(phase, converged);
    }
    plan_current(&mut b, inst, &names, &current, obs);
    let converged = b.is_idle();
    let phase = live_phase(inst, obs, converged, b.problem.is_some());
    // Housekeeping: in flight work that does not make the spec unconverged.
    plan_retirement(&mut b, &current, obs);
    backups::plan(&mut b, input.backups, &names, &current, obs);
    b.finish(phase, converged)
}

/// Whether a pass of `input` can need the RDS snapshots: to tear down (final snapshots),
/// for a backup in flight, or around a restore (its snapshot, and the retirement snapshots
/// of the data it superseded). Otherwise the observation may leave them out; should a
/// database still need one (say, superseded data with no restore in status), the plan
/// says so (`Plan::needs_snapshots`) and the pass looks again with them.
pub fn needs_snapshots(input: &PlanInput<'_>) -> bool {
    let inst = input.inst;
    inst.is_deleted()
        || !input.backups.is_empty()
        || inst.spec.restore.is_some()
        || inst.status.restore.is_some()
}

/// The access point and database of the data generation in use.
pub fn current<'a>(
    inst: &Instance,
    obs: &'a Observed,
) -> (
    Option<&'a ObservedAccessPoint>,
    Option<&'a ObservedDatabase>,
) {
    let names = ResourceNames::for_key(&inst.key());
    let (epoch, _) = data_generation(inst);
    let cur = Current::find(&names, epoch.as_deref(), obs);
    (cur.access_point, cur.database)
}

/// The resources of the epoch in use, picked out of everything tagged with the instance.
#[derive(Debug, Clone)]
pub(crate) struct Current<'a> {
    pub service: Option<&'a ObservedService>,
    pub access_point: Option<&'a ObservedAccessPoint>,
    pub database: Option<&'a ObservedDatabase>,
    /// The EFS directory and RDS identifier of the epoch in use.
    pub root: String,
    pub db_name: String,
}

impl<'a> Current<'a> {
    fn find(names: &ResourceNames, epoch: Option<&str>, obs: &'a Observed) -> Current<'a> {
        let root = names.access_point_root(epoch);
        let db_name = names.database(epoch);
        let on_root = |ap: &&ObservedAccessPoint| ap.root_path == root;
        // Prefer one that is not being deleted (a duplicate someone is cleaning up).
        let access_point = obs
            .access_points
            .iter()
            .filter(on_root)
            .find(|ap| ap.state != AccessPointState::Deleting)
            .or_else(|| obs.access_points.iter().find(on_root));
        Current {
            service: obs.service.as_ref(),
            access_point,
            database: obs.databases.iter().find(|db| db.identifier == db_name),
            root,
            db_name,
        }
    }
}

/// Accumulates steps and waits while the planner walks the resources.
#[derive(Default)]
pub(crate) struct Builder {
    pub steps: Vec<Step>,
    pub waits: Vec<Wait>,
    pub problem: Option<Problem>,
    pub backups: Vec<BackupProgress>,
    pub restore: Option<RestoreProgress>,
    pub needs_snapshots: bool,
}

impl Builder {
    /// The observed snapshots; `None` (and the plan asks for them) when the observation
    /// left them out: the caller then decides nothing that depends on them.
    pub fn snapshots<'o>(&mut self, obs: &'o Observed) -> Option<&'o [ObservedSnapshot]> {
        let seen = obs.snapshots.observed().map(Vec::as_slice);
        self.needs_snapshots |= seen.is_none();
        seen
    }

    pub fn step(&mut self, step: Step) {
        self.steps.push(step);
    }

    pub fn wait(&mut self, on: WaitingOn, reason: &'static str, message: impl Into<String>) {
        self.waits.push(Wait {
            on,
            reason,
            message: message.into(),
        });
    }

    pub fn problem(&mut self, reason: &'static str, message: impl Into<String>) {
        self.problem = Some(Problem {
            reason,
            message: message.into(),
        });
    }

    pub fn is_idle(&self) -> bool {
        self.steps.is_empty() && self.waits.is_empty() && self.problem.is_none()
    }

    fn finish(self, phase: Phase, converged: bool) -> Plan {
        Plan {
            steps: self.steps,
            phase,
            converged,
            waits: self.waits,
            problem: self.problem,
            backups: self.backups,
            restore: self.restore,
            needs_snapshots: self.needs_snapshots,
        }
    }
}

fn plan_log_group(b: &mut Builder, names: &ResourceNames, obs: &Observed) {
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
}

/// Converges the resources of the epoch in use towards the spec.
fn plan_current(
    b: &mut Builder,
    inst: &Instance,
    names: &ResourceNames,
    cur: &Current<'_>,
    obs: &Observed,
) {
    let spec = &inst.spec;
    let access_point = plan_access_point(b, cur);
    let db_ready = plan_database(b, spec, cur);
    match spec.state {
        DesiredState::Active => {
            plan_active_service(b, inst, names, cur, obs, access_point, db_ready)
        }
        DesiredState::Suspended => plan_suspended(b, cur),
    }
}

/// Returns the access point once it is usable.
pub(crate) fn plan_access_point<'a>(
    b: &mut Builder,
    cur: &Current<'a>,
) -> Option<&'a ObservedAccessPoint> {
    let Some(ap) = cur.access_point else {
        b.step(Step::CreateAccessPoint {
            root_path: cur.root.clone(),
        });
        b.wait(
            WaitingOn::AccessPoint,
            "CreatingAccessPoint",
            "creating the EFS access point",
        );
        return None;
    };
    match ap.state {
        AccessPointState::Available => Some(ap),
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
    }
}

/// Returns the database once it is available (and of the right class when active).
fn plan_database<'a>(
    b: &mut Builder,
    spec: &Spec,
    cur: &Current<'a>,
) -> Option<&'a ObservedDatabase> {
    let Some(db) = cur.database else {
        b.step(Step::CreateDatabase {
            identifier: cur.db_name.clone(),
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

/// The count, image and data resources an active service should run with.
pub(crate) struct ServiceTarget<'a> {
    pub desired_count: u32,
    pub image: String,
    pub access_point: &'a ObservedAccessPoint,
    pub database: &'a ObservedDatabase,
}

impl ServiceTarget<'_> {
    fn endpoint(&self) -> String {
        self.database.endpoint.clone().unwrap_or_default()
    }

    fn matches(&self, svc: &ObservedService) -> bool {
        svc.desired_count == self.desired_count
            && svc.image == self.image
            && svc.access_point_id == self.access_point.id
            && svc.db_endpoint == self.endpoint()
    }
}

/// Creates or updates the service towards `target`; returns whether it already matches
/// (settled: every wanted task runs, healthy, no deployment in flight).
pub(crate) fn converge_service(
    b: &mut Builder,
    inst: &Instance,
    names: &ResourceNames,
    obs: &Observed,
    target: &ServiceTarget<'_>,
) -> bool {
    let want = target.desired_count;
    let Some(svc) = &obs.service else {
        b.step(Step::CreateService {
            name: names.service.clone(),
            desired_count: want,
            image: target.image.clone(),
            access_point_id: target.access_point.id.clone(),
            db_endpoint: target.endpoint(),
        });
        b.wait(
            WaitingOn::Tasks,
            "StartingTasks",
            format!("starting {want} WordPress tasks"),
        );
        return false;
    };
    if svc.state == ServiceState::Draining {
        b.wait(
            WaitingOn::Service,
            "ServiceDraining",
            format!("ECS service {} is draining; it will be recreated", svc.name),
        );
        return false;
    }
    if !target.matches(svc) {
        b.step(Step::UpdateService {
            name: svc.name.clone(),
            desired_count: want,
            image: target.image.clone(),
            access_point_id: target.access_point.id.clone(),
            db_endpoint: target.endpoint(),
        });
        b.wait(
            WaitingOn::Tasks,
            "UpdatingService",
            update_message(svc, target),
        );
        return false;
    }
    if !health::settled(svc) {
        b.wait(
            WaitingOn::Tasks,
            "WaitingForTasks",
            format!(
                "{} of {} tasks running, {} pending",
                svc.running_count, want, svc.pending_count
            ),
        );
        return false;
    }
    let prev = inst.status.resources.service.as_ref();
    let judged = health::judge(
        prev,
        inst.status.replicas.desired,
        svc,
        obs.tasks.as_deref(),
    );
    match (judged, judged.covers(want)) {
        (_, Some(true)) => true,
        (health::TaskHealth::Listed { healthy }, _) => {
            b.wait(
                WaitingOn::Tasks,
                "WaitingForHealthyTasks",
                format!("{healthy} of {want} tasks healthy"),
            );
            false
        }
        _ => {
            b.wait(
                WaitingOn::Tasks,
                "WaitingForHealthyTasks",
                "task health not known yet",
            );
            false
        }
    }
}

fn plan_active_service(
    b: &mut Builder,
    inst: &Instance,
    names: &ResourceNames,
    cur: &Current<'_>,
    obs: &Observed,
    access_point: Option<&ObservedAccessPoint>,
    db: Option<&ObservedDatabase>,
) {
    // Tasks need the database endpoint and the access point; until both exist, the waits
    // (or problem) recorded for them keep the instance converging. An existing service is
    // left alone meanwhile (it may be waiting for RDS to start on resume).
    let (Some(access_point), Some(database)) = (access_point, db) else {
        if let Some(svc) = cur.service
            && svc.desired_count != inst.spec.configuration.desired_count
        {
            b.wait(
                WaitingOn::Database,
                "WaitingForDatabase",
                "the task count is restored once the database is available",
            );
        }
        return;
    };
    let target = ServiceTarget {
        desired_count: inst.spec.configuration.desired_count,
        image: image(&inst.spec),
        access_point,
        database,
    };
    converge_service(b, inst, names, obs, &target);
}

fn update_message(svc: &ObservedService, target: &ServiceTarget<'_>) -> String {
    if svc.desired_count != target.desired_count {
        format!(
            "scaling from {} to {} tasks",
            svc.desired_count, target.desired_count
        )
    } else if svc.image != target.image {
        "rolling out a new WordPress version".into()
    } else {
        "pointing the service at its data resources".into()
    }
}

/// Scales the service to zero; returns whether no task runs any more.
pub(crate) fn quiesce_service(b: &mut Builder, svc: Option<&ObservedService>) -> bool {
    match svc {
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
                access_point_id: svc.access_point_id.clone(),
                db_endpoint: svc.db_endpoint.clone(),
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
    }
}

fn plan_suspended(b: &mut Builder, cur: &Current<'_>) {
    // RDS is stopped only once no task can still be using it.
    if quiesce_service(b, cur.service)
        && let Some(db) = cur.database
        && db.state == DbState::Available
    {
        b.step(Step::StopDatabase {
            identifier: db.identifier.clone(),
        });
        b.wait(
            WaitingOn::Database,
            "StoppingDatabase",
            "stopping the RDS database",
        );
    }
}

/// Retires data resources a completed restore superseded: access points and databases of
/// other epochs that the service no longer uses. A database is snapshotted first.
fn plan_retirement(b: &mut Builder, cur: &Current<'_>, obs: &Observed) {
    let uses_ap = |id: &str| cur.service.is_some_and(|s| s.access_point_id == id);
    let uses_db = |db: &ObservedDatabase| {
        cur.service
            .is_some_and(|s| db.endpoint.as_deref() == Some(s.db_endpoint.as_str()))
    };
    for ap in obs
        .access_points
        .iter()
        .filter(|ap| ap.root_path != cur.root)
    {
        if uses_ap(&ap.id) || ap.state == AccessPointState::Deleting {
            continue;
        }
        b.step(Step::DeleteAccessPoint { id: ap.id.clone() });
        b.wait(
            WaitingOn::AccessPoint,
            "RetiringAccessPoint",
            format!("retiring superseded access point {}", ap.id),
        );
    }
    for db in obs
        .databases
        .iter()
        .filter(|db| db.identifier != cur.db_name)
    {
        if uses_db(db) {
            continue;
        }
        let snapshot = ResourceNames::retirement_snapshot(&db.identifier);
        remove_database(b, db, &snapshot, obs, "RetiringDatabase");
    }
}

/// Snapshots a database, then deletes it once the snapshot is available.
fn remove_database(
    b: &mut Builder,
    db: &ObservedDatabase,
    snapshot_id: &str,
    obs: &Observed,
    reason: &'static str,
) {
    let deletable = matches!(db.state, DbState::Available | DbState::Stopped);
    if db.state == DbState::Deleting {
        return b.wait(
            WaitingOn::Database,
            reason,
            format!("deleting RDS database {}", db.identifier),
        );
    }
    let Some(snapshots) = b.snapshots(obs) else {
        // Not described this pass: whether the snapshot exists is unknown, so neither
        // take it nor delete the database; look again with the snapshots.
        return b.wait(
            WaitingOn::Snapshot,
            "LookingForSnapshot",
            format!(
                "looking for snapshot {snapshot_id} of RDS database {}",
                db.identifier
            ),
        );
    };
    let snapshot = snapshots.iter().find(|s| s.id == snapshot_id);
    match snapshot {
        None if deletable => {
            b.step(Step::SnapshotDatabase {
                identifier: db.identifier.clone(),
                snapshot_id: snapshot_id.to_owned(),
            });
            b.wait(
                WaitingOn::Snapshot,
                "TakingFinalSnapshot",
                format!("taking snapshot {snapshot_id} before removing the database"),
            );
        }
        Some(snap) if snap.state == SnapshotState::Creating => b.wait(
            WaitingOn::Snapshot,
            "TakingFinalSnapshot",
            format!("snapshot {} is being created", snap.id),
        ),
        Some(snap) if snap.state == SnapshotState::Failed => b.problem(
            "FinalSnapshotFailed",
            format!(
                "snapshot {} failed; the database is kept until a person acts",
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
                reason,
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
    let db_down = obs.databases.iter().any(|db| {
        matches!(
            db.state,
            DbState::Stopped | DbState::Stopping | DbState::Starting
        )
    });
    let missing = obs.log_group.is_none()
        || obs.access_points.is_empty()
        || obs.databases.is_empty()
        || obs.service.is_none();
    match inst.status.phase {
        Phase::PendingProvisioning | Phase::Provisioning => Phase::Provisioning,
        Phase::Suspended | Phase::Suspending | Phase::Resuming => Phase::Resuming,
        _ if missing => Phase::Provisioning,
        _ if db_down => Phase::Resuming,
        _ => Phase::Scaling,
    }
}

/// Tears everything down in order; each stage waits for the previous one to be gone.
fn plan_teardown(b: &mut Builder, obs: &Observed) {
    // Short-circuits: a stage starts only once the previous one's resources are gone.
    let _all_gone = teardown_service(b, obs)
        && teardown_access_points(b, obs)
        && teardown_databases(b, obs)
        && teardown_log_group(b, obs);
}

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

fn teardown_access_points(b: &mut Builder, obs: &Observed) -> bool {
    for ap in &obs.access_points {
        if ap.state != AccessPointState::Deleting {
            b.step(Step::DeleteAccessPoint { id: ap.id.clone() });
        }
        b.wait(
            WaitingOn::AccessPoint,
            "DeletingAccessPoint",
            format!("deleting EFS access point {}", ap.id),
        );
    }
    obs.access_points.is_empty()
}

fn teardown_databases(b: &mut Builder, obs: &Observed) -> bool {
    for db in &obs.databases {
        let snapshot = ResourceNames::final_snapshot(&db.identifier);
        remove_database(b, db, &snapshot, obs, "DeletingDatabase");
    }
    obs.databases.is_empty()
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
