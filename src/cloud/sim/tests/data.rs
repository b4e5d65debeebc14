//! Data epochs and content: observation of every epoch, UpdateService switching data
//! resources, snapshots and RestoreDatabase, AWS Backup backup and restore jobs, and all
//! of it across a restart.

use super::*;
use crate::cloud::names::epoch_of;
use crate::cloud::{JobKind, JobRef, JobState, ObservedJob};

const CLASS: &str = "db.t4g.micro";

impl Steps {
    fn ap_at(&self, epoch: Option<&str>) -> Step {
        Step::CreateAccessPoint {
            root_path: self.0.access_point_root(epoch),
        }
    }
    fn db_at(&self, epoch: Option<&str>) -> Step {
        Step::CreateDatabase {
            identifier: self.0.database(epoch),
            instance_class: CLASS.into(),
            allocated_storage_gb: 20,
        }
    }
    fn svc_on(&self, count: u32, image: &str, ap: &str, endpoint: &str) -> Step {
        Step::CreateService {
            name: self.0.service.clone(),
            desired_count: count,
            image: image.into(),
            access_point_id: ap.into(),
            db_endpoint: endpoint.into(),
        }
    }
    fn update_on(&self, count: u32, image: &str, ap: &str, endpoint: &str) -> Step {
        Step::UpdateService {
            name: self.0.service.clone(),
            desired_count: count,
            image: image.into(),
            access_point_id: ap.into(),
            db_endpoint: endpoint.into(),
        }
    }
    fn snapshot_of(&self, epoch: Option<&str>, snapshot_id: &str) -> Step {
        Step::SnapshotDatabase {
            identifier: self.0.database(epoch),
            snapshot_id: snapshot_id.into(),
        }
    }
    fn backup(&self, backup_id: &str) -> Step {
        Step::StartBackupJob {
            backup_id: backup_id.into(),
            root_path: self.0.access_point_root(None),
        }
    }
    fn restore_job(&self, arn: &str, epoch: &str) -> Step {
        Step::StartRestoreJob {
            recovery_point_arn: arn.into(),
            target_root: self.0.access_point_root(Some(epoch)),
        }
    }
    fn relocate(&self, restore_job_id: &str, epoch: &str, replaces: Option<&str>) -> Step {
        Step::RelocateRestoredFiles {
            restore_job_id: restore_job_id.into(),
            target_root: self.0.access_point_root(Some(epoch)),
            replaces: replaces.map(str::to_owned),
        }
    }
    fn restore_db(&self, snapshot_id: &str, epoch: &str) -> Step {
        Step::RestoreDatabase {
            identifier: self.0.database(Some(epoch)),
            snapshot_id: snapshot_id.into(),
            instance_class: CLASS.into(),
        }
    }
}

/// The id of a job step's outcome.
async fn start_job(cloud: &SimCloud, k: &InstanceKey, step: &Step) -> String {
    match apply(cloud, k, step).await {
        Ok(StepOutcome::Started { job_id }) => job_id,
        other => panic!("{} should start a job: {other:?}", step.name()),
    }
}

fn backup_ref(id: &str) -> JobRef {
    JobRef {
        kind: JobKind::Backup,
        id: id.into(),
    }
}

fn restore_ref(id: &str) -> JobRef {
    JobRef {
        kind: JobKind::Restore,
        id: id.into(),
    }
}

fn relocation_ref(id: &str) -> JobRef {
    JobRef {
        kind: JobKind::Relocation,
        id: id.into(),
    }
}

/// Polls DescribeBackupJob / DescribeRestoreJob until the job is no longer running.
async fn until_job_ends(cloud: &SimCloud, job: &JobRef) -> ObservedJob {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = cloud
            .describe_jobs(std::slice::from_ref(job))
            .await
            .expect("describe");
        assert_eq!(seen.len(), 1, "{job:?} is known");
        if seen[0].state != JobState::Running {
            return seen[0].clone();
        }
        assert!(Instant::now() < deadline, "{job:?} never ended: {seen:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn available_ap(o: &Observed, root: &str) -> Option<String> {
    o.access_points
        .iter()
        .find(|a| a.root_path == root && a.state == AccessPointState::Available)
        .map(|a| a.id.clone())
}

fn available_db_endpoint(o: &Observed, identifier: &str) -> Option<String> {
    o.databases
        .iter()
        .find(|d| d.identifier == identifier && d.state == DbState::Available)
        .and_then(|d| d.endpoint.clone())
}

/// An instance serving one task from the data resources of epoch `None`; returns the
/// access point id and the DB endpoint.
async fn site(cloud: &SimCloud, k: &InstanceKey) -> (String, String) {
    let s = Steps::of(k);
    apply_ok(cloud, k, &s.log()).await;
    apply_ok(cloud, k, &s.ap_at(None)).await;
    apply_ok(cloud, k, &s.db_at(None)).await;
    let root = names(k).access_point_root(None);
    let db = names(k).database(None);
    let ap = until(cloud, k, "access point", |o| available_ap(o, &root)).await;
    let endpoint = until(cloud, k, "database", |o| available_db_endpoint(o, &db)).await;
    apply_ok(cloud, k, &s.svc_on(1, "wordpress:6.6", &ap, &endpoint)).await;
    (ap, endpoint)
}

fn inventory_db(cloud: &SimCloud, identifier: &str) -> DatabaseView {
    cloud
        .inventory()
        .databases
        .into_iter()
        .find(|d| d.identifier == identifier)
        .unwrap_or_else(|| panic!("no DB {identifier}"))
}

async fn until_snapshot_available(cloud: &SimCloud, k: &InstanceKey, id: &str) {
    until(cloud, k, id, |o| {
        o.snapshots
            .observed()
            .expect("snapshots observed")
            .iter()
            .any(|s| s.id == id && s.state == SnapshotState::Available)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn observation_lists_every_epoch_of_the_instance() {
    let cloud = cloud();
    let (k, other) = (key(1), key(2));
    let s = Steps::of(&k);
    let e = epoch_of("rs-1");
    let n = names(&k);
    apply_ok(&cloud, &k, &s.ap_at(None)).await;
    apply_ok(&cloud, &k, &s.ap_at(Some(&e))).await;
    apply_ok(&cloud, &k, &s.db_at(None)).await;
    apply_ok(&cloud, &k, &s.db_at(Some(&e))).await;
    apply_ok(&cloud, &other, &Steps::of(&other).ap_at(None)).await;
    apply_ok(&cloud, &other, &Steps::of(&other).db_at(None)).await;

    let seen = observe1(&cloud, &k).await;
    let roots: Vec<&str> = seen
        .access_points
        .iter()
        .map(|a| a.root_path.as_str())
        .collect();
    assert_eq!(
        roots,
        [n.access_point_root(None), n.access_point_root(Some(&e))],
        "oldest first, only the instance's own"
    );
    let mut dbs: Vec<&str> = seen
        .databases
        .iter()
        .map(|d| d.identifier.as_str())
        .collect();
    dbs.sort_unstable();
    assert_eq!(dbs, [n.database(None), n.database(Some(&e))]);

    let db0 = n.database(None);
    let db1 = n.database(Some(&e));
    until(&cloud, &k, "both available", |o| {
        (o.databases.len() == 2 && o.databases.iter().all(|d| d.state == DbState::Available))
            .then_some(())
    })
    .await;
    let retired = ResourceNames::retirement_snapshot(&db0);
    let final_ = ResourceNames::final_snapshot(&db1);
    apply_ok(&cloud, &k, &s.snapshot_of(None, &retired)).await;
    apply_ok(&cloud, &k, &s.snapshot_of(Some(&e), &final_)).await;
    until_db(&cloud, &other, DbState::Available).await;
    apply_ok(
        &cloud,
        &other,
        &Steps::of(&other).snapshot_of(None, "someone-elses"),
    )
    .await;
    let seen = observe1(&cloud, &k).await;
    let snaps: Vec<(&str, &str)> = seen
        .snapshots
        .observed()
        .expect("snapshots observed")
        .iter()
        .map(|x| (x.id.as_str(), x.db_identifier.as_str()))
        .collect();
    assert_eq!(
        snaps,
        [
            (retired.as_str(), db0.as_str()),
            (final_.as_str(), db1.as_str())
        ]
    );
    let theirs = observe1(&cloud, &other).await;
    assert_eq!(theirs.access_points.len(), 1);
    assert_eq!(theirs.databases.len(), 1);
    assert_eq!(
        theirs
            .snapshots
            .observed()
            .expect("snapshots observed")
            .iter()
            .map(|x| x.id.as_str())
            .collect::<Vec<_>>(),
        ["someone-elses"]
    );
}

#[tokio::test]
async fn update_service_switching_data_resources_is_a_new_deployment() {
    let cloud = cloud_at(200.0);
    let k = key(1);
    let s = Steps::of(&k);
    let e = epoch_of("rs-1");
    let (ap0, endpoint0) = site(&cloud, &k).await;
    until_running(&cloud, &k, 1).await;
    let first_tasks: Vec<String> = cloud
        .tasks_of(&k)
        .await
        .expect("tasks")
        .into_iter()
        .map(|t| t.id)
        .collect();

    // Repeating the current configuration changes nothing.
    apply_ok(
        &cloud,
        &k,
        &s.update_on(1, "wordpress:6.6", &ap0, &endpoint0),
    )
    .await;
    assert_eq!(cloud.tasks_of(&k).await.expect("tasks").len(), 1);

    // Switching to an access point that does not exist is refused, retryably.
    let missing = apply(
        &cloud,
        &k,
        &s.update_on(1, "wordpress:6.6", "fsap-00000000000000000", &endpoint0),
    )
    .await;
    assert!(is_invalid_state(&missing), "{missing:?}");

    apply_ok(&cloud, &k, &s.ap_at(Some(&e))).await;
    let root1 = names(&k).access_point_root(Some(&e));
    let ap1 = until(&cloud, &k, "new access point", |o| available_ap(o, &root1)).await;
    let endpoint1 = "restored.example.internal";
    apply_ok(
        &cloud,
        &k,
        &s.update_on(1, "wordpress:6.6", &ap1, endpoint1),
    )
    .await;
    let svc = observe1(&cloud, &k).await.service.expect("svc");
    assert_eq!(
        (svc.access_point_id.as_str(), svc.db_endpoint.as_str()),
        (ap1.as_str(), endpoint1)
    );
    assert_eq!(svc.image, "wordpress:6.6", "same image, new deployment");
    assert_eq!(svc.rollout, Rollout::InProgress);
    assert_eq!(
        (svc.running_count, svc.pending_count),
        (1, 1),
        "the old task serves until its replacement runs"
    );
    until(&cloud, &k, "rollout", |o| {
        o.service
            .as_ref()
            .filter(|x| x.rollout == Rollout::Completed)
            .map(drop)
    })
    .await;
    let tasks = cloud.tasks_of(&k).await.expect("tasks");
    assert_eq!(tasks.len(), 1);
    assert!(
        !first_tasks.contains(&tasks[0].id),
        "a new task replaced the old"
    );
    let view = &cloud.inventory().services[0];
    assert_eq!(view.access_point_id, ap1);

    // An access point being deleted cannot be switched to either.
    apply_ok(&cloud, &k, &Step::DeleteAccessPoint { id: ap0.clone() }).await;
    let deleting = apply(
        &cloud,
        &k,
        &s.update_on(1, "wordpress:6.6", &ap0, endpoint1),
    )
    .await;
    assert!(is_invalid_state(&deleting), "{deleting:?}");
}

#[tokio::test]
async fn write_data_needs_a_site_that_serves() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    assert!(matches!(
        cloud.write_data(&k, "A"),
        Err(SimError::InvalidState(_))
    ));
    // A service whose endpoint names no DB cannot write.
    apply_ok(&cloud, &k, &s.ap_at(None)).await;
    let root = names(&k).access_point_root(None);
    let ap = until(&cloud, &k, "ap", |o| available_ap(o, &root)).await;
    apply_ok(&cloud, &k, &s.svc_on(1, "wp:1", &ap, "nowhere.example")).await;
    let calls = cloud.stats().calls;
    assert!(matches!(
        cloud.write_data(&k, "A"),
        Err(SimError::InvalidState(_))
    ));
    assert!(cloud.read_data(&k).is_err());
    assert_eq!(cloud.directory(&root), "", "a new directory is empty");
    assert_eq!(cloud.directory("/no/such/dir"), "");
    assert_eq!(
        cloud.stats().calls,
        calls,
        "drift helpers are not API calls"
    );
}

#[tokio::test]
async fn snapshots_capture_data_and_restore_database_brings_it_back() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    let e = epoch_of("rs-1");
    site(&cloud, &k).await;
    cloud.write_data(&k, "A").expect("write A");
    let snap = names(&k).backup_snapshot("bk-1");
    apply_ok(&cloud, &k, &s.snapshot_of(None, &snap)).await;

    let early = apply(&cloud, &k, &s.restore_db(&snap, &e)).await;
    assert!(
        is_invalid_state(&early),
        "snapshot still creating: {early:?}"
    );
    let nope = apply(&cloud, &k, &s.restore_db("no-such-snapshot", &e)).await;
    assert!(
        matches!(&nope, Err(CloudError::Permanent { code, .. }) if code == "DBSnapshotNotFound"),
        "{nope:?}"
    );

    cloud.write_data(&k, "B").expect("write B");
    until_snapshot_available(&cloud, &k, &snap).await;
    apply_ok(&cloud, &k, &s.restore_db(&snap, &e)).await;
    apply_ok(&cloud, &k, &s.restore_db(&snap, &e)).await;
    let restored_id = names(&k).database(Some(&e));
    let seen = observe1(&cloud, &k).await;
    assert_eq!(seen.databases.len(), 2, "{seen:?}");
    let restored = seen
        .databases
        .iter()
        .find(|d| d.identifier == restored_id)
        .expect("restored DB observed with the instance");
    assert_eq!(restored.state, DbState::Creating);
    assert_eq!(restored.instance_class, CLASS);
    until(&cloud, &k, "restored DB", |o| {
        available_db_endpoint(o, &restored_id)
    })
    .await;

    assert_eq!(inventory_db(&cloud, &restored_id).data, "A");
    assert_eq!(inventory_db(&cloud, &names(&k).database(None)).data, "B");
    let inv = cloud.inventory();
    assert_eq!(inv.snapshots.len(), 1);
    assert_eq!(inv.snapshots[0].data, "A");
    assert_eq!(inv.databases.len(), 2, "the second restore did nothing");
    assert_eq!(stat(&cloud, "rds:RestoreDBInstanceFromDBSnapshot").calls, 4);
}

#[tokio::test]
async fn backup_jobs_are_idempotent_by_token_and_produce_recovery_points() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    let missing = apply(&cloud, &k, &s.backup("bk-0")).await;
    assert!(is_invalid_state(&missing), "no directory yet: {missing:?}");

    site(&cloud, &k).await;
    cloud.write_data(&k, "A").expect("write");
    let step = s.backup("bk-1");
    let id = start_job(&cloud, &k, &step).await;
    assert_eq!(
        start_job(&cloud, &k, &step).await,
        id,
        "same token, same job"
    );
    assert_eq!(cloud.inventory().backup_jobs.len(), 1);
    assert_eq!(stat(&cloud, "backup:StartBackupJob").calls, 3);
    cloud.write_data(&k, "B").expect("later write");

    let running = cloud
        .describe_jobs(&[backup_ref(&id)])
        .await
        .expect("describe");
    assert_eq!(running[0].state, JobState::Running);
    assert_eq!(running[0].recovery_point_arn, None);
    assert!(running[0].percent_done < 100);

    let done = until_job_ends(&cloud, &backup_ref(&id)).await;
    assert_eq!((done.state, done.percent_done), (JobState::Completed, 100));
    assert_eq!(done.kind, JobKind::Backup);
    assert_eq!(done.message, None);
    let arn = done.recovery_point_arn.expect("recovery point");
    assert!(
        arn.starts_with("arn:aws:backup:eu-west-1:123456789012:recovery-point:"),
        "{arn}"
    );
    let inv = cloud.inventory();
    assert_eq!(inv.recovery_points.len(), 1);
    let rp = &inv.recovery_points[0];
    assert_eq!((rp.arn.as_str(), rp.data.as_str()), (arn.as_str(), "A"));
    assert_eq!(rp.backup_id, "bk-1");
    assert_eq!(inv.backup_jobs[0].state, "COMPLETED");

    // Another token is another job (AWS Backup does not dedupe by parameters).
    let other = ClientToken::derive(&k, 2, &step);
    let second = cloud.apply(&k, &step, &other).await.expect("second job");
    assert_ne!(second, StepOutcome::Started { job_id: id });
    assert_eq!(cloud.inventory().backup_jobs.len(), 2);
}

#[tokio::test]
async fn failing_backup_and_restore_jobs_leave_nothing_behind() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    let e = epoch_of("rs-1");
    site(&cloud, &k).await;
    cloud.write_data(&k, "A").expect("write");
    let good = start_job(&cloud, &k, &s.backup("bk-good")).await;
    let arn = until_job_ends(&cloud, &backup_ref(&good))
        .await
        .recovery_point_arn
        .expect("recovery point");

    cloud.set_faults(Faults {
        backup_failure_rate: 1.0,
        ..Faults::default()
    });
    let bad = start_job(&cloud, &k, &s.backup("bk-bad")).await;
    let failed = until_job_ends(&cloud, &backup_ref(&bad)).await;
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.recovery_point_arn, None);
    assert!(
        failed
            .message
            .as_deref()
            .is_some_and(|m| m.contains("failed"))
    );
    assert!(failed.percent_done < 100);

    let restore = start_job(&cloud, &k, &s.restore_job(&arn, &e)).await;
    let failed = until_job_ends(&cloud, &restore_ref(&restore)).await;
    assert_eq!(failed.state, JobState::Failed);
    let target = names(&k).access_point_root(Some(&e));
    let inv = cloud.inventory();
    assert_eq!(inv.recovery_points.len(), 1, "only the good one");
    assert!(inv.directories.iter().all(|d| d.root_path != target));
    assert_eq!(inv.restore_jobs[0].state, "FAILED");
    // A failed backup's recovery point does not exist.
    let gone_arn = inv
        .backup_jobs
        .iter()
        .find(|j| j.id == bad)
        .and_then(|j| j.recovery_point_arn.clone());
    assert_eq!(gone_arn, None);
}

#[tokio::test]
async fn restore_jobs_land_in_a_recovery_directory_until_the_relocation_moves_them() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    let e = epoch_of("rs-1");
    site(&cloud, &k).await;
    cloud.write_data(&k, "A").expect("write");
    let backup = start_job(&cloud, &k, &s.backup("bk-1")).await;
    let arn = until_job_ends(&cloud, &backup_ref(&backup))
        .await
        .recovery_point_arn
        .expect("recovery point");
    cloud.write_data(&k, "B").expect("write");

    let unknown = apply(&cloud, &k, &s.restore_job("arn:aws:backup:nope", &e)).await;
    assert!(
        matches!(&unknown, Err(CloudError::Permanent { code, .. }) if code == "ResourceNotFoundException"),
        "{unknown:?}"
    );
    let step = s.restore_job(&arn, &e);
    let id = start_job(&cloud, &k, &step).await;
    assert_eq!(start_job(&cloud, &k, &step).await, id);
    let inv = cloud.inventory();
    assert_eq!(inv.restore_jobs.len(), 1);
    let target = names(&k).access_point_root(Some(&e));
    let recovered = inv.restore_jobs[0].recovery_path.clone();
    assert_eq!(inv.restore_jobs[0].target_root, target);
    let (dir, item) = recovered
        .strip_prefix("/aws-backup-restore_")
        .and_then(|r| r.split_once('/'))
        .expect("a recovery directory at the root");
    assert_eq!(format!("/{item}"), names(&k).access_point_root(None));
    assert!(
        crate::cloud::relocate::name_time(&format!("aws-backup-restore_{dir}")).is_some(),
        "its name carries its time: {dir}"
    );
    let early = apply(&cloud, &k, &s.relocate(&id, &e, None)).await;
    assert!(
        matches!(&early, Err(e) if e.is_retryable()),
        "the job has not completed: {early:?}"
    );

    let done = until_job_ends(&cloud, &restore_ref(&id)).await;
    assert_eq!(
        (done.state, done.kind),
        (JobState::Completed, JobKind::Restore)
    );
    assert_eq!(done.recovery_point_arn, None, "only backups produce one");
    // As on AWS: the files are in the recovery directory, not where the restore is for.
    assert_eq!(cloud.directory(&recovered), "A");
    assert!(
        cloud
            .inventory()
            .directories
            .iter()
            .all(|d| d.root_path != target)
    );
    assert_eq!(cloud.directory(&names(&k).access_point_root(None)), "B");

    let relocate = s.relocate(&id, &e, None);
    let task = start_job(&cloud, &k, &relocate).await;
    assert!(task.starts_with("arn:aws:ecs:"), "{task}");
    assert_eq!(
        start_job(&cloud, &k, &relocate).await,
        task,
        "same token, same task"
    );
    let moved = until_job_ends(&cloud, &relocation_ref(&task)).await;
    assert_eq!(
        (moved.kind, moved.state, moved.percent_done),
        (JobKind::Relocation, JobState::Completed, 100)
    );
    assert_eq!(cloud.directory(&target), "A");
    assert_eq!(cloud.directory(&recovered), "", "moved away");
    let inv = cloud.inventory();
    assert!(inv.directories.iter().all(|d| d.root_path != recovered));
    assert_eq!(inv.relocation_tasks.len(), 1);
    assert_eq!(
        inv.relocation_tasks[0].moves.as_deref(),
        Some(recovered.as_str())
    );

    // Run again in place of a task the cloud forgot: another task, which finds the
    // files in place and moves nothing.
    let rerun = start_job(&cloud, &k, &s.relocate(&id, &e, Some(&task))).await;
    assert_ne!(rerun, task);
    let again = until_job_ends(&cloud, &relocation_ref(&rerun)).await;
    assert_eq!(again.state, JobState::Completed);
    assert_eq!(cloud.directory(&target), "A");

    apply_ok(&cloud, &k, &s.ap_at(Some(&e))).await;
    let ap = until(&cloud, &k, "restored ap", |o| available_ap(o, &target)).await;
    let inv = cloud.inventory();
    let view = inv
        .access_points
        .iter()
        .find(|a| a.id == ap)
        .expect("ap view");
    assert_eq!(
        view.data, "A",
        "an access point on the target shows the restored data"
    );
}

#[tokio::test]
async fn a_relocation_with_nothing_to_move_fails_and_says_why() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    site(&cloud, &k).await;
    cloud.write_data(&k, "A").expect("write");
    let backup = start_job(&cloud, &k, &s.backup("bk-1")).await;
    let arn = until_job_ends(&cloud, &backup_ref(&backup))
        .await
        .recovery_point_arn
        .expect("recovery point");
    let (e1, e2) = (epoch_of("rs-1"), epoch_of("rs-2"));
    let restore = start_job(&cloud, &k, &s.restore_job(&arn, &e1)).await;
    until_job_ends(&cloud, &restore_ref(&restore)).await;
    let first = start_job(&cloud, &k, &s.relocate(&restore, &e1, None)).await;
    until_job_ends(&cloud, &relocation_ref(&first)).await;
    // The same job's files, elsewhere: they were moved already.
    let second = start_job(&cloud, &k, &s.relocate(&restore, &e2, None)).await;
    let failed = until_job_ends(&cloud, &relocation_ref(&second)).await;
    assert_eq!(failed.state, JobState::Failed);
    let why = failed.message.unwrap_or_default();
    assert!(why.starts_with("exit 3:"), "{why}");
    assert_eq!(cloud.directory(&names(&k).access_point_root(Some(&e2))), "");
    assert_eq!(
        cloud.directory(&names(&k).access_point_root(Some(&e1))),
        "A"
    );
    let unknown = apply(
        &cloud,
        &k,
        &s.relocate("NO-SUCH-JOB", &epoch_of("rs-3"), None),
    )
    .await;
    assert!(
        matches!(&unknown, Err(CloudError::Permanent { code, .. }) if code == "ResourceNotFoundException"),
        "{unknown:?}"
    );
}

/// write A → backup (job + snapshot) → write B → restore (job + RestoreDatabase) → move
/// the files into place → new access point → switch the service → the site reads A again.
#[tokio::test]
async fn a_full_backup_and_restore_cycle_brings_back_the_backed_up_data() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    let n = names(&k);
    site(&cloud, &k).await;
    until_running(&cloud, &k, 1).await;
    cloud.write_data(&k, "A").expect("write A");

    let backup_id = "bk-0001";
    let snap = n.backup_snapshot(backup_id);
    let job = start_job(&cloud, &k, &s.backup(backup_id)).await;
    apply_ok(&cloud, &k, &s.snapshot_of(None, &snap)).await;
    let arn = until_job_ends(&cloud, &backup_ref(&job))
        .await
        .recovery_point_arn
        .expect("recovery point");
    until_snapshot_available(&cloud, &k, &snap).await;

    cloud.write_data(&k, "B").expect("write B");
    assert_eq!(
        cloud.read_data(&k).expect("read"),
        SiteData {
            files: "B".into(),
            database: "B".into()
        }
    );

    let e = epoch_of("rs-0001");
    let restore = start_job(&cloud, &k, &s.restore_job(&arn, &e)).await;
    apply_ok(&cloud, &k, &s.restore_db(&snap, &e)).await;
    until_job_ends(&cloud, &restore_ref(&restore)).await;
    let task = start_job(&cloud, &k, &s.relocate(&restore, &e, None)).await;
    until_job_ends(&cloud, &relocation_ref(&task)).await;
    let db1 = n.database(Some(&e));
    let endpoint = until(&cloud, &k, "restored DB", |o| {
        available_db_endpoint(o, &db1)
    })
    .await;
    apply_ok(&cloud, &k, &s.ap_at(Some(&e))).await;
    let root1 = n.access_point_root(Some(&e));
    let ap = until(&cloud, &k, "restored ap", |o| available_ap(o, &root1)).await;
    apply_ok(&cloud, &k, &s.update_on(1, "wordpress:6.6", &ap, &endpoint)).await;

    assert_eq!(
        cloud.read_data(&k).expect("read"),
        SiteData {
            files: "A".into(),
            database: "A".into()
        }
    );
    let seen = observe1(&cloud, &k).await;
    assert_eq!(seen.access_points.len(), 2);
    assert_eq!(seen.databases.len(), 2);
    assert_eq!(
        seen.snapshots.observed().expect("snapshots observed").len(),
        1
    );
    // The superseded epoch still holds B until the controller retires it.
    assert_eq!(cloud.directory(&n.access_point_root(None)), "B");
    assert_eq!(inventory_db(&cloud, &n.database(None)).data, "B");
    // New writes go to the restored resources.
    cloud.write_data(&k, "C").expect("write C");
    assert_eq!(cloud.directory(&root1), "C");
    assert_eq!(inventory_db(&cloud, &db1).data, "C");
}

#[tokio::test]
async fn jobs_recovery_points_and_directories_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key(1);
    let s = Steps::of(&k);
    let e = epoch_of("rs-1");
    let backup_step = s.backup("bk-1");
    let (backup, backup_done_at, arn) = {
        let cloud = SimCloud::open(dir.path(), fast()).expect("open");
        site(&cloud, &k).await;
        cloud.write_data(&k, "A").expect("write");
        let backup = start_job(&cloud, &k, &backup_step).await;
        let done_at = cloud.lock_inventory().jobs[&backup].done_at;
        (backup, done_at, None::<String>)
    }; // the controller restarts while the backup job runs
    assert!(arn.is_none());

    let cloud = SimCloud::open(dir.path(), fast()).expect("reopen");
    assert_eq!(
        cloud.lock_inventory().jobs[&backup].done_at,
        backup_done_at,
        "the job keeps its schedule"
    );
    assert_eq!(
        start_job(&cloud, &k, &backup_step).await,
        backup,
        "its token still finds it"
    );
    let done = until_job_ends(&cloud, &backup_ref(&backup)).await;
    assert!(
        now_ms() >= backup_done_at,
        "not earlier than its original time"
    );
    let arn = done.recovery_point_arn.expect("recovery point");
    let restore = start_job(&cloud, &k, &s.restore_job(&arn, &e)).await;
    let restore_done_at = cloud.lock_inventory().jobs[&restore].done_at;
    let before = cloud.inventory();
    drop(cloud);

    let cloud = SimCloud::open(dir.path(), fast()).expect("reopen again");
    let after = cloud.inventory();
    assert_eq!(after.recovery_points, before.recovery_points);
    assert_eq!(after.databases, before.databases, "DB data persisted");
    assert_eq!(
        cloud.directory(&names(&k).access_point_root(None)),
        "A",
        "directory data persisted"
    );
    until_job_ends(&cloud, &restore_ref(&restore)).await;
    assert!(now_ms() >= restore_done_at);
    let target = names(&k).access_point_root(Some(&e));
    assert_eq!(
        cloud.directory(&target),
        "",
        "still in its recovery directory"
    );
    let relocate = s.relocate(&restore, &e, None);
    let task = start_job(&cloud, &k, &relocate).await;
    drop(cloud); // the controller restarts while the relocation task runs

    let cloud = SimCloud::open(dir.path(), fast()).expect("reopen a third time");
    assert_eq!(
        start_job(&cloud, &k, &relocate).await,
        task,
        "its token still finds it"
    );
    until_job_ends(&cloud, &relocation_ref(&task)).await;
    assert_eq!(cloud.directory(&target), "A");
    assert_eq!(cloud.inventory().relocation_tasks.len(), 1);
}

#[tokio::test]
async fn describe_jobs_costs_one_call_per_job_and_omits_unknown_ids() {
    let cloud = cloud();
    let k = key(1);
    let s = Steps::of(&k);
    assert!(cloud.describe_jobs(&[]).await.expect("none").is_empty());
    assert_eq!(cloud.stats().calls, 0, "nothing to describe, no call");

    apply_ok(&cloud, &k, &s.ap_at(None)).await;
    let id = start_job(&cloud, &k, &s.backup("bk-1")).await;
    let refs = [
        backup_ref("00000000-0000-0000-0000-000000000000"),
        backup_ref(&id),
        restore_ref(&id),    // right id, wrong kind
        relocation_ref(&id), // an ECS task: DescribeTasks
    ];
    assert_eq!(
        cloud.cost(&crate::cloud::Call::DescribeJobs(&refs)),
        [("backup", 3), ("ecs", 1)]
    );
    let seen = cloud.describe_jobs(&refs).await.expect("describe");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].id, id);
    assert_eq!(stat(&cloud, "backup:DescribeBackupJob").calls, 2);
    assert_eq!(stat(&cloud, "backup:DescribeRestoreJob").calls, 1);
    assert_eq!(stat(&cloud, "ecs:DescribeTasks").calls, 1);
    let log = cloud.call_log();
    let described: Vec<Option<&str>> = log
        .iter()
        .filter(|c| c.operation == "DescribeBackupJob")
        .map(|c| c.instance.as_deref())
        .collect();
    assert!(described.contains(&Some("t1/blog1")));
    assert!(
        described.contains(&None),
        "an unknown job is about no instance"
    );

    cloud.set_faults(Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    });
    let r = cloud.describe_jobs(&refs[1..2]).await;
    assert!(
        matches!(
            &r,
            Err(CloudError::Throttled {
                service: "backup",
                ..
            })
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn the_backup_service_has_its_own_bucket() {
    let mut config = fast();
    config.limits.backup = RateLimit {
        rate: 0.001,
        burst: 2.0,
    };
    let cloud = SimCloud::in_memory(config);
    let k = key(1);
    apply_ok(&cloud, &k, &Steps::of(&k).ap_at(None)).await;
    let unknown = [backup_ref("x"), backup_ref("y"), backup_ref("z")];
    let r = cloud.describe_jobs(&unknown).await;
    assert!(matches!(r, Err(CloudError::Throttled { .. })), "{r:?}");
    assert_eq!(stat(&cloud, "backup:DescribeBackupJob").throttled, 1);
    // Other services are unaffected.
    observe1(&cloud, &k).await;
    assert_eq!(
        SimConfig::default().limits.backup,
        RateLimit {
            rate: 5.0,
            burst: 10.0
        }
    );
}

#[test]
fn task_history_keeps_the_newest_timelines() {
    let mut inv = Inventory::default();
    let k = key(1);
    let past = |i: i64| super::super::ecs::PastTask {
        id: format!("task{i:03}"),
        image: "wp:1".into(),
        running_at: i * 10,
        stop_at: i * 10 + 5,
    };
    inv.remember_tasks("svc", &k, (0..40).map(past).collect());
    inv.remember_tasks("svc", &k, (30..70).map(past).collect());
    let kept = &inv.task_history["svc"].tasks;
    assert_eq!(kept.len(), MAX_PAST_TASKS);
    assert_eq!(kept[0].id, "task020");
    assert_eq!(kept.last().map(|t| t.id.as_str()), Some("task069"));
    let ids: std::collections::HashSet<&str> = kept.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), kept.len(), "no duplicates");
}
