//! Property tests of `plan()` (issue 7) over random desired / observed pairs:
//! * data resources (databases, access points; snapshots and recovery points are never
//!   deleted at all) are destroyed only for a deleted instance or when they belong to no
//!   epoch in use or being restored into, and a database only once a snapshot of it is
//!   available; a live instance never loses its service or log group;
//! * a converged pair (the cloud exactly as the spec says) yields no step;
//! * every step moves toward desired: against an idealized cloud that carries each step
//!   out at once, planning again and again reaches "converged, no step" within a few
//!   rounds from any starting state, and each step on the way agrees with the spec.

use proptest::prelude::*;

use super::*;
use crate::cloud::{ObservedLogGroup, ObservedSnapshot, ObservedTask, Rollout, Seen};
use crate::model::{Backup, BackupStatus, Configuration, InstanceKey, RestoreStatus, Timestamp};

fn key() -> InstanceKey {
    InstanceKey::from_strs("t1", "blog")
}

fn names() -> ResourceNames {
    ResourceNames::for_key(&key())
}

const REQUEST: &str = "rs-00000000000000000000000000000042";
const BACKUP: &str = "bk-0000000000010000abcd";

fn at() -> Timestamp {
    chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn restore_epoch() -> String {
    epoch_of(REQUEST)
}

fn endpoint(db: &str) -> String {
    format!("{db}.rds.example")
}

fn tier() -> impl Strategy<Value = Tier> {
    prop_oneof![
        Just(Tier::Standard),
        Just(Tier::Professional),
        Just(Tier::Enterprise)
    ]
}

fn restore_stage() -> impl Strategy<Value = RestoreStage> {
    prop_oneof![
        Just(RestoreStage::Stopping),
        Just(RestoreStage::Restoring),
        Just(RestoreStage::Attaching),
        Just(RestoreStage::Starting),
        Just(RestoreStage::Completed),
        Just(RestoreStage::Failed),
    ]
}

fn phase() -> impl Strategy<Value = Phase> {
    proptest::sample::select(Phase::ALL.to_vec())
}

/// A desired state: tier, state, count, deleted or not, a restore asked for or not (and
/// how far its status got), backups in flight.
fn desired(with_restore: bool) -> impl Strategy<Value = (Instance, Vec<Backup>, Option<Backup>)> {
    (
        tier(),
        any::<bool>(),
        2u32..=10,
        any::<bool>(),
        phase(),
        proptest::option::of((
            proptest::option::of(restore_stage()),
            any::<bool>(),
            any::<bool>(),
        )),
        proptest::collection::vec((any::<bool>(), any::<bool>()), 0..=2),
        any::<bool>(),
    )
        .prop_map(
            move |(tier, active, count, deleted, phase, restore, backups, usable)| {
                let restore = restore.filter(|_| with_restore);
                let backups = if with_restore { backups } else { vec![] };
                let spec = Spec {
                    organization_name: "Acme".into(),
                    contact_email: "ops@acme.example".into(),
                    tier,
                    state: if active {
                        DesiredState::Active
                    } else {
                        DesiredState::Suspended
                    },
                    configuration: Configuration {
                        desired_count: count.min(tier.max_desired_count()),
                        ..Configuration::default()
                    },
                    restore: None,
                };
                let mut inst = Instance::new(key(), spec, at());
                inst.status.phase = phase;
                if deleted {
                    inst.metadata.deletion_requested_at = Some(at());
                }
                let mut restore_from = None;
                if let Some((stage, job, relocation)) = restore {
                    inst.spec.restore = Some(RestoreSpec {
                        backup_id: BACKUP.into(),
                        request_id: REQUEST.into(),
                    });
                    inst.status.restore = stage.map(|stage| RestoreStatus {
                        request_id: REQUEST.into(),
                        backup_id: BACKUP.into(),
                        stage,
                        progress: 0,
                        started_at: at(),
                        completed_at: None,
                        efs_restore_job_id: job.then(|| "rjob-1".to_owned()),
                        efs_relocation_task_id: (job && relocation).then(|| "rtask-1".to_owned()),
                        previous_epoch: None,
                        error: None,
                    });
                    let mut b = Backup::new(&key(), at());
                    b.backup_id = BACKUP.into();
                    b.status = if usable {
                        BackupStatus::Completed
                    } else {
                        BackupStatus::Failed
                    };
                    b.efs_recovery_point_arn = Some("arn:rp:1".into());
                    b.rds_snapshot_id = Some(names().backup_snapshot(BACKUP));
                    restore_from = Some(b);
                }
                let backups = backups
                    .into_iter()
                    .enumerate()
                    .map(|(i, (running, job))| {
                        let mut b = Backup::new(&key(), at());
                        b.backup_id = format!("bk-00000000000100{i:02}abcd");
                        b.status = if running {
                            BackupStatus::Running
                        } else {
                            BackupStatus::Pending
                        };
                        b.efs_backup_job_id = job.then(|| format!("job-{i}"));
                        b
                    })
                    .collect();
                (inst, backups, restore_from)
            },
        )
}

fn epochs() -> Vec<Option<String>> {
    vec![None, Some(restore_epoch())]
}

fn db_state(ok_only: bool) -> BoxedStrategy<DbState> {
    let mut states = vec![
        DbState::Available,
        DbState::Stopped,
        DbState::Creating,
        DbState::Starting,
        DbState::Stopping,
        DbState::Modifying,
        DbState::BackingUp,
        DbState::Deleting,
    ];
    if !ok_only {
        states.push(DbState::Failed);
    }
    proptest::sample::select(states).boxed()
}

fn ap_state(ok_only: bool) -> BoxedStrategy<AccessPointState> {
    let mut states = vec![
        AccessPointState::Available,
        AccessPointState::Creating,
        AccessPointState::Deleting,
    ];
    if !ok_only {
        states.push(AccessPointState::Error);
    }
    proptest::sample::select(states).boxed()
}

fn snapshot_state(ok_only: bool) -> BoxedStrategy<SnapshotState> {
    let mut states = vec![SnapshotState::Available, SnapshotState::Creating];
    if !ok_only {
        states.push(SnapshotState::Failed);
    }
    proptest::sample::select(states).boxed()
}

/// Any cloud the instance could be seen in: resources of both epochs in any state, some
/// duplicated, a service pointing at either epoch's data or at nothing, snapshots of every
/// kind, jobs in any state. `ok_only` leaves out failed states (a person's problem).
fn observed(ok_only: bool) -> impl Strategy<Value = Observed> {
    let n = names();
    let db_ids: Vec<String> = epochs().iter().map(|e| n.database(e.as_deref())).collect();
    let roots: Vec<String> = epochs()
        .iter()
        .map(|e| n.access_point_root(e.as_deref()))
        .collect();
    let dbs = proptest::collection::vec(
        (
            proptest::sample::select(db_ids.clone()),
            db_state(ok_only),
            any::<bool>(),
        ),
        0..=2,
    );
    let aps =
        proptest::collection::vec((proptest::sample::select(roots), ap_state(ok_only)), 0..=3);
    let mut snapshot_ids: Vec<(String, String)> = vec![];
    for db in &db_ids {
        snapshot_ids.push((ResourceNames::final_snapshot(db), db.clone()));
        snapshot_ids.push((ResourceNames::retirement_snapshot(db), db.clone()));
    }
    snapshot_ids.push((n.backup_snapshot(BACKUP), db_ids[0].clone()));
    let snaps = proptest::collection::vec(
        (
            proptest::sample::select(snapshot_ids),
            snapshot_state(ok_only),
        ),
        0..=3,
    );
    let service = proptest::option::of((
        any::<bool>(),
        0u32..=10,
        0u32..=10,
        0u32..=2,
        any::<bool>(),
        0usize..4,
        proptest::sample::select(db_ids.clone()),
        any::<bool>(),
    ));
    let jobs = proptest::collection::vec(
        (
            proptest::sample::select(vec![JobKind::Backup, JobKind::Restore, JobKind::Relocation]),
            proptest::sample::select(vec![
                JobState::Running,
                JobState::Completed,
                JobState::Failed,
            ]),
        ),
        0..=2,
    );
    (
        dbs,
        aps,
        snaps,
        service,
        any::<bool>(),
        proptest::option::of(0usize..=10),
        jobs,
    )
        .prop_map(move |(dbs, aps, snaps, service, log, tasks, jobs)| {
            let mut o = Observed::default();
            for (id, state, class_ok) in dbs {
                if o.databases.iter().any(|d| d.identifier == id) {
                    continue; // RDS identifiers are unique
                }
                o.databases.push(ObservedDatabase {
                    endpoint: Some(endpoint(&id)),
                    arn: format!("arn:db:{id}"),
                    identifier: id,
                    state,
                    instance_class: if class_ok {
                        "db.t4g.micro".into()
                    } else {
                        "db.m5.large".into()
                    },
                });
            }
            for (i, (root, state)) in aps.into_iter().enumerate() {
                o.access_points.push(ObservedAccessPoint {
                    id: format!("fsap-{i}"),
                    arn: format!("arn:ap:{i}"),
                    state,
                    root_path: root,
                });
            }
            for (id, state) in snaps {
                if o.snapshots
                    .observed()
                    .expect("snapshots observed")
                    .iter()
                    .any(|s| s.id == id.0)
                {
                    continue;
                }
                o.snapshots
                    .observed_mut()
                    .expect("snapshots observed")
                    .push(ObservedSnapshot {
                        arn: format!("arn:snap:{}", id.0),
                        id: id.0,
                        state,
                        db_identifier: id.1,
                    });
            }
            if let Some((active, desired, running, pending, image_ok, ap, db, done)) = service {
                o.service = Some(ObservedService {
                    name: names().service,
                    arn: "arn:svc".into(),
                    state: if active {
                        ServiceState::Active
                    } else {
                        ServiceState::Draining
                    },
                    desired_count: desired,
                    running_count: running,
                    pending_count: pending,
                    image: if image_ok {
                        "wordpress:6.5-php8.2-apache".into()
                    } else {
                        "wordpress:6.4-php8.1-apache".into()
                    },
                    access_point_id: format!("fsap-{ap}"),
                    db_endpoint: endpoint(&db),
                    rollout: if done {
                        Rollout::Completed
                    } else {
                        Rollout::InProgress
                    },
                    deployment: None,
                });
            }
            if log {
                o.log_group = Some(ObservedLogGroup {
                    name: names().log_group,
                    arn: "arn:lg".into(),
                });
            }
            o.tasks = tasks.map(|n| (0..n).map(|i| healthy_task(&format!("t{i}"))).collect());
            for (i, (kind, state)) in jobs.into_iter().enumerate() {
                o.jobs.push(ObservedJob {
                    kind,
                    id: match kind {
                        JobKind::Restore => "rjob-1".into(),
                        JobKind::Relocation => "rtask-1".into(),
                        JobKind::Backup => format!("job-{i}"),
                    },
                    state,
                    percent_done: 50,
                    recovery_point_arn: Some("arn:rp:2".into()),
                    message: None,
                });
            }
            o
        })
}

use crate::cloud::{JobKind, JobState, ObservedJob};

fn healthy_task(id: &str) -> ObservedTask {
    ObservedTask {
        id: id.into(),
        last_status: "RUNNING".into(),
        health: "HEALTHY".into(),
        started_at: None,
        image: "wordpress:6.5-php8.2-apache".into(),
    }
}

/// The epoch of a database identifier or access point root (`None`: the original data).
fn epoch_of_db(id: &str) -> Option<String> {
    let restored = restore_epoch();
    (id == names().database(Some(&restored))).then_some(restored)
}

fn epoch_of_root(root: &str) -> Option<String> {
    let restored = restore_epoch();
    (root == names().access_point_root(Some(&restored))).then_some(restored)
}

/// Epochs whose data must not be destroyed: the one in use and the one being restored
/// into (once this pass completes a restore, its epoch alone is in use).
fn kept_epochs(inst: &Instance, plan: &Plan) -> Vec<Option<String>> {
    let (in_use, pending) = data_generation(inst);
    match (&plan.restore, pending) {
        (Some(r), Some(_)) if r.stage == RestoreStage::Completed => {
            vec![Some(epoch_of(&r.request_id))]
        }
        (_, Some(wanted)) => vec![in_use, Some(epoch_of(&wanted.request_id))],
        (_, None) => vec![in_use],
    }
}

/// The destructive-step invariants; `Err` says which one broke.
fn check_destruction(inst: &Instance, o: &Observed, p: &Plan) -> Result<(), String> {
    let kept = kept_epochs(inst, p);
    for step in p.steps.iter().filter(|s| s.is_destructive()) {
        if !inst.is_deleted() {
            match step {
                Step::DeleteAccessPoint { id } => {
                    let ap = o.access_points.iter().find(|a| &a.id == id);
                    let epoch = ap.map(|a| epoch_of_root(&a.root_path));
                    if epoch.as_ref().is_none_or(|e| kept.contains(e)) {
                        return Err(format!("{step:?} of an epoch in use ({kept:?})"));
                    }
                    if o.service.as_ref().is_some_and(|s| &s.access_point_id == id) {
                        return Err(format!("{step:?}: the service uses it"));
                    }
                }
                Step::DeleteDatabase { identifier, .. } => {
                    if kept.contains(&epoch_of_db(identifier)) {
                        return Err(format!("{step:?} of an epoch in use ({kept:?})"));
                    }
                }
                other => return Err(format!("{other:?} for a live instance")),
            }
        }
        if let Step::DeleteDatabase {
            identifier,
            final_snapshot_id,
        } = step
        {
            let snap = o
                .snapshots
                .observed()
                .expect("snapshots observed")
                .iter()
                .find(|s| &s.id == final_snapshot_id);
            if !snap.is_some_and(|s| {
                s.state == SnapshotState::Available && &s.db_identifier == identifier
            }) {
                return Err(format!("{step:?} without an available snapshot of it"));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if std::env::var("WPFLEET_SOAK").is_ok_and(|v| v == "1") { 20_000 } else { 2_000 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn data_is_destroyed_only_when_deleted_or_superseded_and_after_a_snapshot(
        (inst, backups, restore_from) in desired(true),
        o in observed(false),
    ) {
        let input = PlanInput { inst: &inst, backups: &backups, restore_from: restore_from.as_ref() };
        let p = plan(&input, &o);
        if let Err(why) = check_destruction(&inst, &o, &p) {
            prop_assert!(false, "{why}\nplan: {:?}\ninstance: {inst:?}\nobserved: {o:?}", p.steps);
        }
    }

    /// Snapshots left out of an observation are never read as "none": without them the
    /// plan takes no snapshot and deletes no database, takes no step it would not take with
    /// any snapshots seen, decides convergence the same way, and whenever seeing them would
    /// have changed anything, it says it needs them.
    #[test]
    fn snapshots_not_observed_are_never_taken_for_absent(
        (inst, backups, restore_from) in desired(true),
        o in observed(false),
    ) {
        let input = PlanInput { inst: &inst, backups: &backups, restore_from: restore_from.as_ref() };
        let seen = plan(&input, &o);
        let mut blind = o.clone();
        blind.snapshots = Seen::NotObserved;
        let p = plan(&input, &blind);
        for step in &p.steps {
            prop_assert!(
                !matches!(step, Step::SnapshotDatabase { .. } | Step::DeleteDatabase { .. }),
                "{step:?} without the snapshots observed"
            );
            prop_assert!(seen.steps.contains(step), "{step:?} not planned with them: {:?}", seen.steps);
        }
        prop_assert_eq!(p.converged, seen.converged);
        if !p.needs_snapshots {
            prop_assert_eq!(&p.steps, &seen.steps);
            prop_assert_eq!(p.phase, seen.phase);
            prop_assert_eq!(&p.waits, &seen.waits);
            prop_assert_eq!(&p.backups, &seen.backups);
            prop_assert_eq!(&p.restore, &seen.restore);
        }
        // The runner observes them up front whenever the plan can need them; the plan
        // asks afterwards only for data of another epoch with no restore in status.
        if p.needs_snapshots && !needs_snapshots(&input) {
            let (epoch, _) = data_generation(&inst);
            let current = names().database(epoch.as_deref());
            prop_assert!(
                o.databases.iter().any(|d| d.identifier != current),
                "asked for snapshots the runner did not foresee: {o:?}"
            );
        }
    }

    #[test]
    fn a_converged_pair_yields_no_step((inst, _, _) in desired(false)) {
        let o = converged_world(&inst);
        let p = plan(&PlanInput::new(&inst), &o);
        prop_assert!(p.converged && p.steps.is_empty(), "{p:?}\n{o:?}");
    }

    #[test]
    fn every_step_moves_toward_desired(
        (inst, _, _) in desired(false),
        o in observed(true),
    ) {
        let mut inst = inst;
        let mut cloud = o;
        settle(&mut cloud);
        for round in 0..12 {
            let p = plan(&PlanInput::new(&inst), &cloud);
            if let Err(why) = check_destruction(&inst, &cloud, &p) {
                prop_assert!(false, "round {round}: {why}");
            }
            for step in &p.steps {
                if let Err(why) = agrees_with_spec(&inst, step) {
                    prop_assert!(false, "round {round}: {why}\n{cloud:?}");
                }
            }
            if p.converged && p.steps.is_empty() {
                prop_assert_eq!(p.phase, expected_phase(&inst));
                return Ok(());
            }
            for step in &p.steps {
                carry_out(&mut cloud, step);
            }
            settle(&mut cloud);
            inst.status.phase = p.phase;
        }
        prop_assert!(false, "not converged after 12 rounds: {cloud:?}");
    }
}

fn expected_phase(inst: &Instance) -> Phase {
    match (inst.is_deleted(), inst.spec.state) {
        (true, _) => Phase::Deprovisioned,
        (false, DesiredState::Active) => Phase::Active,
        (false, DesiredState::Suspended) => Phase::Suspended,
    }
}

/// A step that contradicts the spec moves away from desired.
fn agrees_with_spec(inst: &Instance, step: &Step) -> Result<(), String> {
    let spec = &inst.spec;
    let active = spec.state == DesiredState::Active && !inst.is_deleted();
    let ok = match step {
        Step::CreateService {
            desired_count,
            image: img,
            ..
        } => active && *desired_count == spec.configuration.desired_count && *img == image(spec),
        Step::UpdateService {
            desired_count,
            image: img,
            ..
        } if *desired_count > 0 => {
            active && *desired_count == spec.configuration.desired_count && *img == image(spec)
        }
        Step::UpdateService { .. } => !active,
        Step::StartDatabase { .. } => active,
        Step::StopDatabase { .. } => !active && !inst.is_deleted(),
        Step::CreateDatabase { instance_class, .. }
        | Step::ModifyDatabase { instance_class, .. } => {
            !inst.is_deleted() && instance_class == db_instance_class(spec.tier)
        }
        Step::CreateAccessPoint { .. } | Step::CreateLogGroup { .. } => !inst.is_deleted(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{step:?} contradicts the spec {spec:?} (deleted: {})",
            inst.is_deleted()
        ))
    }
}

/// The cloud exactly as the spec wants it (no restore, no backup in flight).
fn converged_world(inst: &Instance) -> Observed {
    if inst.is_deleted() {
        return Observed::default();
    }
    let n = names();
    let db = n.database(None);
    let active = inst.spec.state == DesiredState::Active;
    let count = inst.spec.configuration.desired_count;
    Observed {
        service: active.then(|| ObservedService {
            name: n.service.clone(),
            arn: "arn:svc".into(),
            state: ServiceState::Active,
            desired_count: count,
            running_count: count,
            pending_count: 0,
            image: image(&inst.spec),
            access_point_id: "fsap-0".into(),
            db_endpoint: endpoint(&db),
            rollout: Rollout::Completed,
            deployment: None,
        }),
        access_points: vec![ObservedAccessPoint {
            id: "fsap-0".into(),
            arn: "arn:ap:0".into(),
            state: AccessPointState::Available,
            root_path: n.access_point_root(None),
        }],
        databases: vec![ObservedDatabase {
            identifier: db.clone(),
            arn: "arn:db".into(),
            state: if active {
                DbState::Available
            } else {
                DbState::Stopped
            },
            endpoint: Some(endpoint(&db)),
            instance_class: db_instance_class(inst.spec.tier).into(),
        }],
        snapshots: Seen::Observed(vec![]),
        log_group: Some(ObservedLogGroup {
            name: n.log_group.clone(),
            arn: "arn:lg".into(),
        }),
        tasks: Some(
            (0..if active { count } else { 0 })
                .map(|i| healthy_task(&format!("t{i}")))
                .collect(),
        ),
        jobs: vec![],
    }
}

/// An idealized cloud: the step takes effect at once.
fn carry_out(o: &mut Observed, step: &Step) {
    match step {
        Step::CreateLogGroup { name, .. } => {
            o.log_group = Some(ObservedLogGroup {
                name: name.clone(),
                arn: "arn:lg".into(),
            });
        }
        Step::DeleteLogGroup { .. } => o.log_group = None,
        Step::CreateAccessPoint { root_path } => {
            let id = format!("fsap-new-{}", o.access_points.len());
            o.access_points.push(ObservedAccessPoint {
                arn: format!("arn:{id}"),
                id,
                state: AccessPointState::Available,
                root_path: root_path.clone(),
            });
        }
        Step::DeleteAccessPoint { id } => o.access_points.retain(|a| &a.id != id),
        Step::CreateDatabase {
            identifier,
            instance_class,
            ..
        } => o.databases.push(ObservedDatabase {
            identifier: identifier.clone(),
            arn: "arn:db".into(),
            state: DbState::Available,
            endpoint: Some(endpoint(identifier)),
            instance_class: instance_class.clone(),
        }),
        Step::ModifyDatabase {
            identifier,
            instance_class,
        } => db_mut(o, identifier, |d| d.instance_class = instance_class.clone()),
        Step::StartDatabase { identifier } => {
            db_mut(o, identifier, |d| d.state = DbState::Available)
        }
        Step::StopDatabase { identifier } => db_mut(o, identifier, |d| d.state = DbState::Stopped),
        Step::SnapshotDatabase {
            identifier,
            snapshot_id,
        } => o
            .snapshots
            .observed_mut()
            .expect("snapshots observed")
            .push(ObservedSnapshot {
                id: snapshot_id.clone(),
                arn: "arn:snap".into(),
                state: SnapshotState::Available,
                db_identifier: identifier.clone(),
            }),
        Step::DeleteDatabase { identifier, .. } => {
            o.databases.retain(|d| &d.identifier != identifier)
        }
        Step::CreateService {
            name,
            desired_count,
            image,
            access_point_id,
            db_endpoint,
        }
        | Step::UpdateService {
            name,
            desired_count,
            image,
            access_point_id,
            db_endpoint,
        } => {
            o.service = Some(ObservedService {
                name: name.clone(),
                arn: "arn:svc".into(),
                state: ServiceState::Active,
                desired_count: *desired_count,
                running_count: *desired_count,
                pending_count: 0,
                image: image.clone(),
                access_point_id: access_point_id.clone(),
                db_endpoint: db_endpoint.clone(),
                rollout: Rollout::Completed,
                deployment: None,
            });
        }
        Step::DeleteService { .. } => o.service = None,
        Step::StartBackupJob { .. }
        | Step::StartRestoreJob { .. }
        | Step::RelocateRestoredFiles { .. }
        | Step::RestoreDatabase { .. } => {}
    }
}

fn db_mut(o: &mut Observed, id: &str, f: impl FnOnce(&mut ObservedDatabase)) {
    if let Some(d) = o.databases.iter_mut().find(|d| d.identifier == id) {
        f(d);
    }
}

/// Lets time pass: whatever is in progress finishes.
fn settle(o: &mut Observed) {
    o.databases.retain(|d| d.state != DbState::Deleting);
    for d in &mut o.databases {
        d.state = match d.state {
            DbState::Stopping | DbState::Stopped => DbState::Stopped,
            _ => DbState::Available,
        };
    }
    o.access_points
        .retain(|a| a.state != AccessPointState::Deleting);
    for a in &mut o.access_points {
        a.state = AccessPointState::Available;
    }
    for s in o.snapshots.observed_mut().expect("snapshots observed") {
        s.state = SnapshotState::Available;
    }
    if o.service
        .as_ref()
        .is_some_and(|s| s.state == ServiceState::Draining)
    {
        o.service = None;
    }
    if let Some(s) = &mut o.service {
        s.running_count = s.desired_count;
        s.pending_count = 0;
        s.rollout = Rollout::Completed;
    }
    let running = o.service.as_ref().map_or(0, |s| s.running_count);
    o.tasks = Some(
        (0..running)
            .map(|i| healthy_task(&format!("t{i}")))
            .collect(),
    );
    o.jobs.clear();
}
