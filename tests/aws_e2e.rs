//! End to end on the AWS driver: `wpfleet serve --cloud aws` (the real binary) against moto,
//! with the test stand-ins for what moto lacks (ECS's scheduler and awslogs; the
//! relocation task's RunTask, in front of moto's ECS through `AWS_ENDPOINT_URL_ECS`; AWS
//! Backup as a test fake reached through `AWS_ENDPOINT_URL_BACKUP`). A local directory
//! plays the EFS file system: the fake backs it up and restores into recovery directories
//! as AWS Backup does, and the relocation task (the real `wpfleet relocate-restore`) moves
//! the restored files into place there. See docs/AWS.md.
//!
//! * one instance through create → scale → suspend → resume → backup → delete, checking
//!   what AWS (moto) holds after each step, and that a converged reconcile makes no
//!   mutating AWS call;
//! * a controller killed (SIGKILL) while a backup job runs, again while a restore job
//!   runs, and again while the relocation task runs, resumes each after restart without
//!   starting a second one, and the backed-up files end up where the restored access
//!   point looks.

#[path = "common/aws.rs"]
mod aws_support;
#[path = "common/backup_fake.rs"]
mod backup_fake;
mod common;
#[path = "common/moto.rs"]
mod moto;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_support::{EcsFront, EcsSchedulerStandIn, Infra, Moto};
use backup_fake::{BackupFake, Kind};
use common::{BinaryServer, Client, instance_path};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

struct World {
    moto: Moto,
    infra: Infra,
    backup: BackupFake,
    ecs: EcsFront,
    /// The EFS file system stand-in.
    efs: tempfile::TempDir,
    _scheduler: EcsSchedulerStandIn,
}

impl World {
    async fn start() -> Self {
        let endpoint = moto::endpoint();
        let moto = Moto::new(&endpoint);
        let infra = Infra::create(&moto).await;
        let efs = tempfile::tempdir().unwrap();
        let backup =
            BackupFake::start_with_file_system(Duration::from_millis(300), efs.path()).await;
        let ecs = EcsFront::start(&endpoint, efs.path()).await;
        let scheduler = EcsSchedulerStandIn::start(&moto, &infra).await;
        Self {
            moto,
            infra,
            backup,
            ecs,
            efs,
            _scheduler: scheduler,
        }
    }

    fn serve(&self, dir: &Path) -> BinaryServer {
        let mut args = vec!["--cloud".to_owned(), "aws".to_owned()];
        args.extend(self.infra.serve_args());
        args.extend(["--resync-interval".to_owned(), "1h".to_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Every service goes to moto, ECS through its front, AWS Backup to the test fake
        // (the SDK's own variables).
        let env = [
            ("AWS_ENDPOINT_URL", self.moto.endpoint.as_str()),
            ("AWS_ENDPOINT_URL_ECS", self.ecs.url.as_str()),
            ("AWS_ENDPOINT_URL_BACKUP", self.backup.url.as_str()),
        ];
        BinaryServer::spawn_with_env(dir, &args, &env)
    }

    async fn active_task_definitions(&self, family: &str) -> Vec<Value> {
        let out = self
            .moto
            .ecs(
                "ListTaskDefinitions",
                json!({ "familyPrefix": family, "status": "ACTIVE" }),
            )
            .await;
        out["taskDefinitionArns"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn service(&self, name: &str) -> Value {
        let out = self
            .moto
            .ecs(
                "DescribeServices",
                json!({ "cluster": self.infra.cluster, "services": [name] }),
            )
            .await;
        out["services"][0].clone()
    }
}

/// A tenant no earlier run against the same moto used.
fn fresh_tenant() -> String {
    format!("e2e{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

fn body(tier: &str, desired: u32) -> Value {
    json!({
        "organizationName": "Acme Ltd",
        "contactEmail": "ops@acme.example",
        "tier": tier,
        "configuration": { "desiredCount": desired, "wordpressVersion": "6.5" }
    })
}

/// `aws_api_requests_total` by `service:Operation`.
async fn aws_calls(c: &Client) -> BTreeMap<String, f64> {
    let text = c.get("/metrics").await.body;
    let text = text.as_str().expect("metrics text");
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("aws_api_requests_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").expect("a sample");
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        calls.insert(
            format!("{}:{}", label("service"), label("operation")),
            value.parse().unwrap_or(0.0),
        );
    }
    calls
}

fn is_read(op: &str) -> bool {
    let name = op.split(':').nth(1).unwrap_or_default();
    ["Describe", "List", "Get", "Filter"]
        .iter()
        .any(|p| name.starts_with(p))
}

async fn reconcile_now(c: &Client, path: &str) {
    let r = c.post(&format!("{path}/reconcile"), &json!({})).await;
    assert_eq!(r.status, 202, "{:#}", r.body);
    let id = r.body["requestId"].as_str().unwrap().to_owned();
    c.wait_for(path, PATIENCE, |b| {
        b["status"]["lastHandledReconcileRequest"] == id.as_str()
    })
    .await;
}

/// Waits until the instance is ACTIVE on its generation with `desired` tasks.
async fn active(c: &Client, path: &str, desired: u64) -> Value {
    c.wait_for(path, PATIENCE, |b| {
        b["status"]["phase"] == "ACTIVE"
            && b["status"]["observedGeneration"] == b["metadata"]["generation"]
            && b["status"]["replicas"]["desired"] == desired
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_through_its_lifecycle_on_aws() {
    let world = World::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = world.serve(dir.path());
    let c = server.client.clone();
    let tenant = fresh_tenant();
    let path = instance_path(&tenant, "blog");

    // Create.
    let r = c.put(&path, &body("STANDARD", 2)).await;
    assert_eq!(r.status, 201, "{:#}", r.body);
    let b = active(&c, &path, 2).await;
    let resources = &b["status"]["resources"];
    let service_name = resources["service"]["name"].as_str().unwrap().to_owned();
    let svc = world.service(&service_name).await;
    assert_eq!(svc["status"], "ACTIVE");
    assert_eq!(svc["desiredCount"], 2);
    assert_eq!(resources["database"]["instanceClass"], "db.t4g.micro");
    let log_group = format!("/wpfleet/{tenant}/blog");
    assert_eq!(resources["logGroup"]["id"], log_group.as_str());
    // ECS vouched for the new deployment's tasks, so the reconciler did not list them; the
    // status endpoint lists them live.
    let st = c.get(&format!("{path}/status")).await.body;
    let tasks = st["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{st:#}");
    assert!(st["tasksObservedAt"].is_string(), "{st:#}");

    // A converged instance: another pass observes, and mutates nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = aws_calls(&c).await;
    reconcile_now(&c, &path).await;
    let after = aws_calls(&c).await;
    let changed: Vec<(&String, f64)> = after
        .iter()
        .map(|(op, n)| (op, n - before.get(op).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    assert!(
        changed.iter().any(|(op, _)| *op == "ecs:DescribeServices"),
        "the pass observed: {changed:?}"
    );
    let mutating: Vec<_> = changed.iter().filter(|(op, _)| !is_read(op)).collect();
    assert!(
        mutating.is_empty(),
        "a converged pass mutated AWS: {mutating:?}"
    );

    // Scale.
    let r = c
        .post(&format!("{path}/scale"), &json!({"desiredCount": 3}))
        .await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    active(&c, &path, 3).await;
    assert_eq!(world.service(&service_name).await["desiredCount"], 3);

    // Suspend: no tasks, the database stopped.
    let r = c.post(&format!("{path}/suspend"), &json!({})).await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    let b = c
        .wait_for(&path, PATIENCE, |b| {
            b["status"]["phase"] == "SUSPENDED"
                && b["status"]["observedGeneration"] == b["metadata"]["generation"]
        })
        .await;
    assert_eq!(b["status"]["resources"]["database"]["status"], "stopped");
    assert_eq!(world.service(&service_name).await["desiredCount"], 0);

    // Resume.
    let r = c.post(&format!("{path}/resume"), &json!({})).await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    let b = active(&c, &path, 3).await;
    assert_eq!(b["status"]["resources"]["database"]["status"], "available");

    // Backup: an AWS Backup job of the file system + an RDS snapshot.
    let r = c.post(&format!("{path}/backup"), &json!({})).await;
    assert_eq!(r.status, 202, "{:#}", r.body);
    let backup_id = r.body["backupId"].as_str().unwrap().to_owned();
    let done = c
        .wait_for(&format!("{path}/backups/{backup_id}"), PATIENCE, |b| {
            b["status"] == "COMPLETED"
        })
        .await;
    assert!(done["rdsSnapshotId"].is_string(), "{done:#}");
    assert!(done["efsRecoveryPointArn"].is_string(), "{done:#}");
    let jobs = world.backup.requests(Kind::Backup);
    assert_eq!(jobs.len(), 1);
    assert!(
        jobs[0]["ResourceArn"]
            .as_str()
            .unwrap()
            .ends_with(&format!("file-system/{}", world.infra.file_system_id)),
        "{:#}",
        jobs[0]
    );
    let root = format!("/tenants/{tenant}/blog");
    assert_eq!(
        jobs[0]["RecoveryPointTags"]["wpfleet:root-path"],
        root.as_str()
    );
    assert_eq!(
        jobs[0]["RecoveryPointTags"]["bbws:tenant-id"],
        tenant.as_str()
    );

    // Delete: everything goes but the final snapshot.
    assert!(
        !world
            .active_task_definitions(&service_name)
            .await
            .is_empty(),
        "the service runs a registered task definition"
    );
    let r = c.delete(&path).await;
    assert_eq!(r.status, 202, "{:#}", r.body);
    c.wait_for(&path, PATIENCE, |b| b["status"]["phase"] == "DEPROVISIONED")
        .await;
    assert_eq!(world.service(&service_name).await["status"], "INACTIVE");
    let dbs = world_rds(&world, "DescribeDBInstances").await;
    assert!(!dbs.contains(&service_name), "the database is gone: {dbs}");
    let snaps = world_rds(&world, "DescribeDBSnapshots").await;
    assert!(
        snaps.contains(&format!("{service_name}-final")),
        "the final snapshot is kept: {snaps}"
    );
    let groups = world
        .moto
        .logs(
            "DescribeLogGroups",
            json!({ "logGroupNamePrefix": log_group }),
        )
        .await;
    assert_eq!(groups["logGroups"], json!([]), "the log group is gone");
    assert_eq!(
        world.active_task_definitions(&service_name).await,
        Vec::<Value>::new(),
        "no task definition revision is left ACTIVE"
    );
}

/// The raw XML of an RDS describe call (enough to search for identifiers).
async fn world_rds(world: &World, action: &str) -> String {
    let res = reqwest::Client::new()
        .post(format!("{}/", world.moto.endpoint))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20240101/eu-west-1/rds/aws4_request, \
             SignedHeaders=host, Signature=0000",
        )
        .form(&[("Action", action), ("Version", "2014-10-31")])
        .send()
        .await
        .expect("moto answers");
    res.text().await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_resumes_backup_and_restore_jobs_without_starting_new_ones() {
    let world = World::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tenant = fresh_tenant();
    let path = instance_path(&tenant, "shop");

    let first = world.serve(dir.path());
    let c = first.client.clone();
    assert_eq!(c.put(&path, &body("STANDARD", 2)).await.status, 201);
    active(&c, &path, 2).await;

    // What WordPress wrote before the backup, on the file system.
    let site = world.efs.path().join(format!("tenants/{tenant}/shop"));
    std::fs::create_dir_all(site.join("uploads")).unwrap();
    std::fs::write(site.join("uploads/photo.jpg"), "before the backup").unwrap();

    // A backup job starts, then the controller dies while it runs.
    world.backup.hold(true);
    let r = c.post(&format!("{path}/backup"), &json!({})).await;
    assert_eq!(r.status, 202, "{:#}", r.body);
    let backup_id = r.body["backupId"].as_str().unwrap().to_owned();
    let backup_path = format!("{path}/backups/{backup_id}");
    c.wait_for(&backup_path, PATIENCE, |b| b["status"] == "RUNNING")
        .await;
    assert_eq!(world.backup.jobs_created(Kind::Backup), 1);
    first.kill9();

    let second = world.serve(dir.path());
    let c = second.client.clone();
    // The new controller polls the recorded job for a while before it finishes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    world.backup.hold(false);
    c.wait_for(&backup_path, PATIENCE, |b| b["status"] == "COMPLETED")
        .await;
    assert_eq!(
        world.backup.jobs_created(Kind::Backup),
        1,
        "the restarted controller started a second backup job"
    );

    // Written after the backup: the restore must not bring it back.
    std::fs::write(site.join("uploads/photo.jpg"), "after the backup").unwrap();

    // A restore job starts, then the controller dies while it runs.
    world.backup.hold(true);
    let r = c
        .post(
            &format!("{path}/restore"),
            &json!({ "backupId": backup_id }),
        )
        .await;
    assert_eq!(r.status, 202, "{:#}", r.body);
    let request_id = r.body["requestId"].as_str().unwrap().to_owned();
    c.wait_for(&path, PATIENCE, |b| {
        b["status"]["restore"]["requestId"] == request_id.as_str()
            && b["status"]["restore"]["efsRestoreJobId"].is_string()
    })
    .await;
    assert_eq!(world.backup.jobs_created(Kind::Restore), 1);
    second.kill9();

    // The job completes; the relocation task starts, then the controller dies again
    // while that task runs.
    world.ecs.hold(true);
    let third = world.serve(dir.path());
    let c = third.client.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    world.backup.hold(false);
    c.wait_for(&path, PATIENCE, |b| {
        b["status"]["restore"]["efsRelocationTaskId"].is_string()
    })
    .await;
    assert_eq!(world.ecs.tasks_started(), 1);
    third.kill9();

    let fourth = world.serve(dir.path());
    let c = fourth.client.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    world.ecs.hold(false);
    let b = c
        .wait_for(&path, PATIENCE, |b| {
            b["status"]["restore"]["stage"] == "COMPLETED"
                && b["status"]["phase"] == "ACTIVE"
                && b["status"]["observedGeneration"] == b["metadata"]["generation"]
        })
        .await;
    assert_eq!(
        world.backup.jobs_created(Kind::Restore),
        1,
        "the restarted controller started a second restore job"
    );
    assert_eq!(
        world.ecs.tasks_started(),
        1,
        "the restarted controller started a second relocation task"
    );
    let restore = &world.backup.requests(Kind::Restore)[0];
    let items = format!(r#"["/tenants/{tenant}/shop"]"#);
    assert_eq!(restore["Metadata"]["ItemsToRestore"], items.as_str());
    assert_eq!(restore["Metadata"]["newFileSystem"], "false");
    // The service now runs on the restored database: a new one, named by the restore's
    // epoch (status shows it from the pass after the one that completed the restore).
    let svc = b["status"]["resources"]["service"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = c
        .wait_for(&path, PATIENCE, |b| {
            b["status"]["resources"]["database"]["id"]
                .as_str()
                .is_some_and(|db| db.starts_with(&svc) && db.len() == svc.len() + 9)
        })
        .await;
    let endpoint = b["status"]["resources"]["database"]["endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let service = world.service(&svc).await;
    let td = world
        .moto
        .ecs(
            "DescribeTaskDefinition",
            json!({ "taskDefinition": service["taskDefinition"] }),
        )
        .await;
    let env = &td["taskDefinition"]["containerDefinitions"][0]["environment"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|kv| kv["name"] == "WORDPRESS_DB_HOST" && kv["value"] == endpoint.as_str()),
        "the task definition points at the restored database: {env:#}"
    );
    // The backed-up files are where the restored access point looks, and AWS Backup's
    // recovery directory is gone.
    let ap = b["status"]["resources"]["accessPoint"]["id"]
        .as_str()
        .unwrap();
    let aps = world
        .moto
        .efs_get(&format!("/2015-02-01/access-points?AccessPointId={ap}"))
        .await;
    let restored_root = aps["AccessPoints"][0]["RootDirectory"]["Path"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let key = wpfleet::model::InstanceKey::from_strs(&tenant, "shop");
    let epoch = wpfleet::cloud::names::epoch_of(&request_id);
    assert_eq!(
        restored_root,
        wpfleet::cloud::names::ResourceNames::for_key(&key).access_point_root(Some(&epoch)),
        "the service runs on the restore's access point: {aps:#}"
    );
    let restored = world.efs.path().join(restored_root.trim_start_matches('/'));
    assert_eq!(
        std::fs::read_to_string(restored.join("uploads/photo.jpg")).unwrap(),
        "before the backup"
    );
    let leftovers: Vec<_> = std::fs::read_dir(world.efs.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("aws-backup-restore_"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let (command, tags) = world.ecs.tasks().remove(0);
    assert_eq!(command[0], "relocate-restore");
    assert!(
        tags.as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "wpfleet:restore-job"),
        "{tags:#}"
    );
}

/// A steady-state observation of many instances costs a handful of describe calls per
/// service, not one per instance. Prints the ratio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observing_many_instances_is_batched() {
    use futures::StreamExt;
    use wpfleet::cloud::aws::{AwsCloud, RateLimits};
    use wpfleet::cloud::names::ResourceNames;
    use wpfleet::cloud::{ClientToken, Cloud, Step};
    use wpfleet::metrics::Metrics;
    use wpfleet::model::InstanceKey;

    const N: usize = 30;
    let world = World::start().await;
    let mut settings = world.infra.settings(&world.moto);
    // Set-up is not what is measured: lift the budget (RegisterTaskDefinition's is 1/s).
    settings.rate_limits = RateLimits::parse(
        "ecs=200/400,ecs:RegisterTaskDefinition=200/400,efs=200/400,rds=200/400,logs=200/400",
    )
    .unwrap();
    let cloud = AwsCloud::connect(settings).await.expect("driver");
    let tenant = fresh_tenant();
    let keys: Vec<InstanceKey> = (0..N)
        .map(|i| InstanceKey::from_strs(&tenant, &format!("site{i}")))
        .collect();
    let apply = |key: InstanceKey, step: Step| {
        let cloud = &cloud;
        async move {
            let token = ClientToken::derive(&key, 1, &step);
            cloud.apply(&key, &step, &token).await.expect("step")
        }
    };
    // Data resources of every instance (a few at a time), then one look, then services.
    let data_steps = keys.iter().flat_map(|key| {
        let n = ResourceNames::for_key(key);
        [
            Step::CreateLogGroup {
                name: n.log_group.clone(),
                retention_days: 30,
            },
            Step::CreateAccessPoint {
                root_path: n.access_point_root(None),
            },
            Step::CreateDatabase {
                identifier: n.database(None),
                instance_class: "db.t4g.micro".into(),
                allocated_storage_gb: 20,
            },
        ]
        .map(|step| apply(key.clone(), step))
    });
    futures::stream::iter(data_steps)
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let seen = cloud.observe(&keys).await.unwrap();
    let services = keys.iter().zip(&seen).map(|(key, o)| {
        let step = Step::CreateService {
            name: ResourceNames::for_key(key).service,
            desired_count: 0,
            image: "wordpress:6.5-php8.2-apache".into(),
            access_point_id: o.access_points[0].id.clone(),
            db_endpoint: o.databases[0].endpoint.clone().unwrap(),
        };
        apply(key.clone(), step)
    });
    futures::stream::iter(services)
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    // The first look learns the task definitions (immutable, cached from then on).
    cloud.observe(&keys).await.unwrap();

    let metrics = Arc::new(Metrics::new());
    cloud.set_metrics(metrics.clone());
    let seen = cloud.observe(&keys).await.unwrap();
    for (key, o) in keys.iter().zip(&seen) {
        let n = ResourceNames::for_key(key);
        assert_eq!(o.service.as_ref().map(|s| &s.name), Some(&n.service));
        assert_eq!(o.access_points.len(), 1, "{key}");
        assert_eq!(o.databases.len(), 1, "{key}");
        assert_eq!(o.log_group.as_ref().map(|l| &l.name), Some(&n.log_group));
    }
    let calls =
        |service: &str, op: &str| metrics.aws_requests.with_label_values(&[service, op]).get();
    assert_eq!(calls("ecs", "DescribeServices"), 3, "10 services per call");
    assert_eq!(calls("ecs", "DescribeTaskDefinition"), 0, "cached");
    assert_eq!(calls("rds", "DescribeDBInstances"), 1, "100 ids per filter");
    assert_eq!(calls("rds", "DescribeDBSnapshots"), 1);
    assert_eq!(
        calls("efs", "DescribeAccessPoints"),
        1,
        "one listing per file system"
    );
    // moto ignores DescribeLogGroups' identifiers and pages through every group it holds;
    // AWS returns just these (50 per call).
    let logs = calls("logs", "DescribeLogGroups");
    assert!(logs >= 1);
    let total = metrics.aws_calls_total();
    let without_logs = total - logs;
    println!(
        "observe({N}): {total} AWS calls ({logs} DescribeLogGroups pages on moto), \
         {:.2} calls per instance without them",
        without_logs as f64 / N as f64
    );
    assert!(without_logs as f64 / (N as f64) < 0.25);
}
