//! The driver's paths the local AWS-compatible server cannot show (docs/AWS.md, "Local
//! server gaps"), tested with the SDK's own test double, aws-smithy-mocks: every call goes
//! through the real client, serializer and deserializer, and the mock answers in its place
//! (modeled outputs, or raw HTTP error bodies as AWS sends them).
//!
//! Covered here: ECS tasks (moto lists none), RDS transitional states (moto's are
//! instant), EFS lookup before create (moto ignores the client token), AWS Backup jobs
//! (moto has none), the relocation task (moto cannot RunTask an awsvpc task definition),
//! deletion protection, error classification and the metrics.

use std::sync::{Arc, Mutex};

use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};

use super::{AwsCloud, AwsSettings, Clients};
use crate::cloud::names::ResourceNames;
use crate::cloud::{ClientToken, Cloud, CloudError, JobKind, JobRef, JobState, Step, StepOutcome};
use crate::metrics::Metrics;
use crate::model::InstanceKey;

const CLUSTER_ARN: &str = "arn:aws:ecs:eu-west-1:123456789012:cluster/wp";
const FS_ARN: &str = "arn:aws:elasticfilesystem:eu-west-1:123456789012:file-system/fs-0123";

/// A client of `$krate` whose every call is answered by `$rules` (any rule that matches,
/// as often as it matches), with retries off unless a test turns them on.
macro_rules! client {
    ($krate:ident, $rules:expr) => {
        client!(
            $krate,
            $rules,
            $krate::config::retry::RetryConfig::disabled()
        )
    };
    ($krate:ident, $rules:expr, $retry:expr) => {{
        let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
        for rule in $rules {
            interceptor = interceptor.with_rule(rule);
        }
        $krate::Client::from_conf(
            $krate::Config::builder()
                .behavior_version($krate::config::BehaviorVersion::latest())
                .region($krate::config::Region::new("eu-west-1"))
                .credentials_provider($krate::config::Credentials::new(
                    "AKID", "secret", None, None, "test",
                ))
                .http_client(create_mock_http_client())
                .interceptor(interceptor)
                .retry_config($retry)
                .build(),
        )
    }};
}

/// Rules per service; the cluster and the file system exist unless replaced.
#[derive(Default)]
struct Mocks {
    ecs: Vec<Rule>,
    efs: Vec<Rule>,
    rds: Vec<Rule>,
    backup: Vec<Rule>,
    logs: Vec<Rule>,
}

impl Mocks {
    async fn cloud(mut self) -> AwsCloud {
        use aws_sdk_ecs::operation::describe_clusters::DescribeClustersOutput;
        use aws_sdk_efs::operation::describe_file_systems::DescribeFileSystemsOutput;
        self.ecs.push(
            mock!(aws_sdk_ecs::Client::describe_clusters).then_output(|| {
                DescribeClustersOutput::builder()
                    .clusters(
                        aws_sdk_ecs::types::Cluster::builder()
                            .cluster_arn(CLUSTER_ARN)
                            .status("ACTIVE")
                            .build(),
                    )
                    .build()
            }),
        );
        self.efs.push(
            mock!(aws_sdk_efs::Client::describe_file_systems).then_output(|| {
                DescribeFileSystemsOutput::builder()
                    .file_systems(
                        aws_sdk_efs::types::FileSystemDescription::builder()
                            .file_system_id("fs-0123")
                            .file_system_arn(FS_ARN)
                            .owner_id("123456789012")
                            .creation_token("t")
                            .creation_time(aws_sdk_efs::primitives::DateTime::from_secs(0))
                            .life_cycle_state(aws_sdk_efs::types::LifeCycleState::Available)
                            .number_of_mount_targets(0)
                            .size_in_bytes(
                                aws_sdk_efs::types::FileSystemSize::builder()
                                    .value(0)
                                    .build(),
                            )
                            .performance_mode(aws_sdk_efs::types::PerformanceMode::GeneralPurpose)
                            .set_tags(Some(vec![]))
                            .build()
                            .unwrap(),
                    )
                    .build()
            }),
        );
        let clients = Clients {
            ecs: client!(aws_sdk_ecs, &self.ecs),
            efs: client!(aws_sdk_efs, &self.efs),
            rds: client!(aws_sdk_rds, &self.rds),
            backup: client!(aws_sdk_backup, &self.backup),
            logs: client!(aws_sdk_cloudwatchlogs, &self.logs),
        };
        AwsCloud::start(settings(), clients)
            .await
            .expect("the driver starts")
    }
}

fn settings() -> AwsSettings {
    AwsSettings::new("wp", "fs-0123", &["subnet-1"], &["sg-1"])
}

fn key() -> InstanceKey {
    InstanceKey::from_strs("t1", "blog")
}

fn names() -> ResourceNames {
    ResourceNames::for_key(&key())
}

async fn apply(cloud: &AwsCloud, step: &Step) -> Result<StepOutcome, CloudError> {
    cloud
        .apply(&key(), step, &ClientToken::derive(&key(), 1, step))
        .await
}

/// An error answer as AWS's awsQuery services (RDS) send it.
fn query_error(code: &str) -> String {
    format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>\
         <Message>AWS says {code}</Message></Error><RequestId>r</RequestId></ErrorResponse>"
    )
}

/// An error answer as AWS's JSON services send it.
fn json_error(code: &str) -> String {
    format!(r#"{{"__type":"{code}","code":"{code}","message":"AWS says {code}"}}"#)
}

mod ecs_tasks {
    use super::*;
    use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
    use aws_sdk_ecs::operation::list_tasks::ListTasksOutput;
    use aws_sdk_ecs::types::{Container, HealthStatus, Task};

    fn task(
        id: &str,
        group: &str,
        health: Option<HealthStatus>,
        containers: &[HealthStatus],
    ) -> Task {
        let mut t = Task::builder()
            .task_arn(format!("arn:aws:ecs:eu-west-1:123456789012:task/wp/{id}"))
            .group(group)
            .last_status("RUNNING")
            .set_health_status(health);
        for h in containers {
            t = t.containers(
                Container::builder()
                    .name("wordpress")
                    .image("wordpress:6.5-php8.2-apache")
                    .health_status(h.clone())
                    .build(),
            );
        }
        t.build()
    }

    #[tokio::test]
    async fn tasks_of_the_service_are_listed_with_their_health() {
        let service = names().service;
        let group = format!("service:{service}");
        let (g1, g2) = (group.clone(), group.clone());
        let wanted = service.clone();
        let list = mock!(aws_sdk_ecs::Client::list_tasks)
            .match_requests(move |r| {
                r.service_name() == Some(wanted.as_str())
                    && r.desired_status() == Some(&aws_sdk_ecs::types::DesiredStatus::Running)
            })
            .then_output(|| {
                ListTasksOutput::builder()
                    .task_arns("arn:aws:ecs:eu-west-1:123456789012:task/wp/a")
                    .task_arns("arn:aws:ecs:eu-west-1:123456789012:task/wp/b")
                    .task_arns("arn:aws:ecs:eu-west-1:123456789012:task/wp/c")
                    .build()
            });
        let describe = mock!(aws_sdk_ecs::Client::describe_tasks)
            .match_requests(|r| r.tasks().len() == 3)
            .then_output(move || {
                DescribeTasksOutput::builder()
                    .tasks(task("a", &g1, Some(HealthStatus::Healthy), &[]))
                    // No task-level health: the containers' (all healthy) counts.
                    .tasks(task("b", &g2, None, &[HealthStatus::Healthy]))
                    // Another service's task (a server ignoring the filter) is left out.
                    .tasks(task("c", "service:other", Some(HealthStatus::Healthy), &[]))
                    .build()
            });
        let cloud = Mocks {
            ecs: vec![list, describe],
            ..Mocks::default()
        }
        .cloud()
        .await;
        let tasks = cloud.tasks_of(&key()).await.unwrap();
        let seen: Vec<(&str, &str, &str)> = tasks
            .iter()
            .map(|t| (t.id.as_str(), t.last_status.as_str(), t.health.as_str()))
            .collect();
        assert_eq!(
            seen,
            [("a", "RUNNING", "HEALTHY"), ("b", "RUNNING", "HEALTHY")]
        );
        assert_eq!(tasks[1].image, "wordpress:6.5-php8.2-apache");
    }

    #[tokio::test]
    async fn no_tasks_means_no_describe_call() {
        let list = mock!(aws_sdk_ecs::Client::list_tasks)
            .then_output(|| ListTasksOutput::builder().build());
        let describe = mock!(aws_sdk_ecs::Client::describe_tasks)
            .then_output(|| DescribeTasksOutput::builder().build());
        let cloud = Mocks {
            ecs: vec![list, describe.clone()],
            ..Mocks::default()
        }
        .cloud()
        .await;
        assert!(cloud.tasks_of(&key()).await.unwrap().is_empty());
        assert_eq!(
            describe.num_calls(),
            0,
            "AWS rejects an empty DescribeTasks"
        );
    }
}

mod ecs_service {
    use super::*;
    use aws_sdk_ecs::operation::create_service::CreateServiceOutput;
    use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
    use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionOutput;
    use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionOutput;
    use aws_sdk_ecs::operation::update_service::UpdateServiceOutput;
    use aws_sdk_ecs::types::{
        ContainerDefinition, EfsAuthorizationConfig, EfsVolumeConfiguration, KeyValuePair, Service,
        TaskDefinition, TaskDefinitionStatus, Volume,
    };

    const TD: &str = "arn:aws:ecs:eu-west-1:123456789012:task-definition/wp:7";

    fn live_service() -> Rule {
        mock!(aws_sdk_ecs::Client::describe_services).then_output(|| {
            DescribeServicesOutput::builder()
                .services(
                    Service::builder()
                        .service_name(names().service)
                        .status("ACTIVE")
                        .desired_count(2)
                        .task_definition(TD)
                        .build(),
                )
                .build()
        })
    }

    /// The revision the service runs: image 6.5, access point fsap-1, endpoint db.local.
    fn revision() -> Rule {
        mock!(aws_sdk_ecs::Client::describe_task_definition).then_output(|| {
            DescribeTaskDefinitionOutput::builder()
                .task_definition(
                    TaskDefinition::builder()
                        .task_definition_arn(TD)
                        .container_definitions(
                            ContainerDefinition::builder()
                                .name("wordpress")
                                .image("wordpress:6.5-php8.2-apache")
                                .environment(
                                    KeyValuePair::builder()
                                        .name("WORDPRESS_DB_HOST")
                                        .value("db.local")
                                        .build(),
                                )
                                .build(),
                        )
                        .volumes(
                            Volume::builder()
                                .name("wp-content")
                                .efs_volume_configuration(
                                    EfsVolumeConfiguration::builder()
                                        .file_system_id("fs-0123")
                                        .authorization_config(
                                            EfsAuthorizationConfig::builder()
                                                .access_point_id("fsap-1")
                                                .build(),
                                        )
                                        .build()
                                        .unwrap(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build()
        })
    }

    fn service_step(create: bool, count: u32) -> Step {
        let (name, image) = (names().service, "wordpress:6.5-php8.2-apache".to_owned());
        let (access_point_id, db_endpoint) = ("fsap-1".to_owned(), "db.local".to_owned());
        if create {
            Step::CreateService {
                name,
                desired_count: count,
                image,
                access_point_id,
                db_endpoint,
            }
        } else {
            Step::UpdateService {
                name,
                desired_count: count,
                image,
                access_point_id,
                db_endpoint,
            }
        }
    }

    #[tokio::test]
    async fn a_live_service_is_not_created_again() {
        let create = mock!(aws_sdk_ecs::Client::create_service)
            .then_output(|| CreateServiceOutput::builder().build());
        let cloud = Mocks {
            ecs: vec![live_service(), revision(), create.clone()],
            ..Mocks::default()
        }
        .cloud()
        .await;
        assert_eq!(
            apply(&cloud, &service_step(true, 2)).await,
            Ok(StepOutcome::Done)
        );
        assert_eq!(
            create.num_calls(),
            0,
            "moto (and a lost response) would replace it"
        );
    }

    #[tokio::test]
    async fn scaling_keeps_the_task_definition_revision() {
        let register = mock!(aws_sdk_ecs::Client::register_task_definition)
            .then_output(|| RegisterTaskDefinitionOutput::builder().build());
        let update = mock!(aws_sdk_ecs::Client::update_service)
            .match_requests(|r| r.desired_count() == Some(4) && r.task_definition() == Some(TD))
            .then_output(|| UpdateServiceOutput::builder().build());
        let cloud = Mocks {
            ecs: vec![live_service(), revision(), register.clone(), update.clone()],
            ..Mocks::default()
        }
        .cloud()
        .await;
        assert_eq!(
            apply(&cloud, &service_step(false, 4)).await,
            Ok(StepOutcome::Done)
        );
        assert_eq!((register.num_calls(), update.num_calls()), (0, 1));
    }

    /// ListTaskDefinitions' familyPrefix is a prefix: `wp-t1-blog` also lists the revisions
    /// of an instance named `blog2`, which must stay registered.
    #[tokio::test]
    async fn deleting_the_service_deregisters_exactly_its_families_revisions() {
        use aws_sdk_ecs::operation::delete_service::DeleteServiceOutput;
        use aws_sdk_ecs::operation::deregister_task_definition::DeregisterTaskDefinitionOutput;
        use aws_sdk_ecs::operation::list_task_definitions::ListTaskDefinitionsOutput;
        let service = names().service;
        let arn = |family: &str, rev: u32| {
            format!("arn:aws:ecs:eu-west-1:123456789012:task-definition/{family}:{rev}")
        };
        let listed = [
            arn(&service, 1),
            arn(&service, 2),
            arn(&format!("{service}2"), 1),
            arn(&format!("{service}-relocate"), 1),
        ];
        let list = mock!(aws_sdk_ecs::Client::list_task_definitions)
            .match_requests(|r| r.status() == Some(&TaskDefinitionStatus::Active))
            .then_output(move || {
                ListTaskDefinitionsOutput::builder()
                    .set_task_definition_arns(Some(listed.to_vec()))
                    .build()
            });
        let deregistered = Arc::new(Mutex::new(Vec::new()));
        let seen = deregistered.clone();
        let deregister = mock!(aws_sdk_ecs::Client::deregister_task_definition)
            .match_requests(move |r| {
                seen.lock()
                    .unwrap()
                    .push(r.task_definition().unwrap_or_default().to_owned());
                true
            })
            .then_output(|| DeregisterTaskDefinitionOutput::builder().build());
        let delete = mock!(aws_sdk_ecs::Client::delete_service)
            .then_output(|| DeleteServiceOutput::builder().build());
        let cloud = Mocks {
            ecs: vec![delete, list, deregister],
            ..Mocks::default()
        }
        .cloud()
        .await;
        let step = Step::DeleteService {
            name: service.clone(),
        };
        assert_eq!(apply(&cloud, &step).await, Ok(StepOutcome::Done));
        let mut got = deregistered.lock().unwrap().clone();
        got.sort();
        got.dedup();
        let mut want = vec![
            arn(&service, 1),
            arn(&service, 2),
            arn(&format!("{service}-relocate"), 1),
        ];
        want.sort();
        assert_eq!(got, want);
    }
}

mod efs {
    use super::*;
    use aws_sdk_efs::operation::create_access_point::CreateAccessPointOutput;
    use aws_sdk_efs::operation::describe_access_points::DescribeAccessPointsOutput;
    use aws_sdk_efs::types::{AccessPointDescription, LifeCycleState, RootDirectory, Tag};

    fn ap(root: &str, tenant: &str) -> AccessPointDescription {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build().unwrap();
        AccessPointDescription::builder()
            .access_point_id("fsap-1")
            .access_point_arn("arn:aws:elasticfilesystem:eu-west-1:1:access-point/fsap-1")
            .life_cycle_state(LifeCycleState::Available)
            .root_directory(RootDirectory::builder().path(root).build())
            .tags(tag("bbws:tenant-id", tenant))
            .tags(tag("bbws:instance-id", "blog"))
            .tags(tag("managed-by", "wpfleet"))
            .build()
    }

    fn listing(aps: Vec<AccessPointDescription>) -> Rule {
        mock!(aws_sdk_efs::Client::describe_access_points)
            .match_requests(|r| r.file_system_id() == Some("fs-0123"))
            .then_output(move || {
                DescribeAccessPointsOutput::builder()
                    .set_access_points(Some(aps.clone()))
                    .build()
            })
    }

    fn create() -> Rule {
        let token = ClientToken::derive(&key(), 1, &step()).as_str().to_owned();
        mock!(aws_sdk_efs::Client::create_access_point)
            .match_requests(move |r| {
                r.client_token() == Some(token.as_str())
                    && r.posix_user().map(|p| (p.uid(), p.gid())) == Some((33, 33))
                    && r.root_directory().and_then(|d| d.path()) == Some("/tenants/t1/blog")
            })
            .then_output(|| CreateAccessPointOutput::builder().build())
    }

    fn step() -> Step {
        Step::CreateAccessPoint {
            root_path: "/tenants/t1/blog".into(),
        }
    }

    #[tokio::test]
    async fn an_existing_access_point_is_found_by_tags_and_not_created_again() {
        let create = create();
        let cloud = Mocks {
            efs: vec![listing(vec![ap("/tenants/t1/blog", "t1")]), create.clone()],
            ..Mocks::default()
        }
        .cloud()
        .await;
        assert_eq!(apply(&cloud, &step()).await, Ok(StepOutcome::Done));
        assert_eq!(create.num_calls(), 0);
    }

    #[tokio::test]
    async fn a_missing_one_is_created_with_the_client_token_as_www_data() {
        let create = create();
        // Another tenant's access point on the same root does not count.
        let cloud = Mocks {
            efs: vec![listing(vec![ap("/tenants/t1/blog", "t2")]), create.clone()],
            ..Mocks::default()
        }
        .cloud()
        .await;
        assert_eq!(apply(&cloud, &step()).await, Ok(StepOutcome::Done));
        assert_eq!(create.num_calls(), 1);
    }
}

mod rds {
    use super::*;
    use aws_sdk_rds::operation::delete_db_instance::DeleteDbInstanceOutput;
    use aws_sdk_rds::operation::describe_db_instances::DescribeDbInstancesOutput;
    use aws_sdk_rds::operation::describe_db_snapshots::DescribeDbSnapshotsOutput;
    use aws_sdk_rds::operation::modify_db_instance::ModifyDbInstanceOutput;
    use aws_sdk_rds::types::{DbInstance, DbSnapshot};

    fn db(status: &'static str, protected: bool) -> Rule {
        mock!(aws_sdk_rds::Client::describe_db_instances).then_output(move || {
            DescribeDbInstancesOutput::builder()
                .db_instances(
                    DbInstance::builder()
                        .db_instance_identifier(names().database(None))
                        .db_instance_status(status)
                        .deletion_protection(protected)
                        .build(),
                )
                .build()
        })
    }

    fn start_refused() -> Rule {
        mock!(aws_sdk_rds::Client::start_db_instance)
            .sequence()
            .http_status(400, Some(query_error("InvalidDBInstanceState")))
            .repeatedly()
            .build()
    }

    fn start() -> Step {
        Step::StartDatabase {
            identifier: names().database(None),
        }
    }

    #[tokio::test]
    async fn start_while_creating_is_retryable_invalid_state() {
        let cloud = Mocks {
            rds: vec![start_refused(), db("creating", true)],
            ..Mocks::default()
        }
        .cloud()
        .await;
        let r = apply(&cloud, &start()).await;
        match r {
            Err(e @ CloudError::InvalidState { .. }) => {
                assert!(e.is_retryable());
                assert!(e.to_string().contains("InvalidDBInstanceState"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn start_of_a_starting_database_is_success() {
        let cloud = Mocks {
            rds: vec![start_refused(), db("starting", true)],
            ..Mocks::default()
        }
        .cloud()
        .await;
        assert_eq!(apply(&cloud, &start()).await, Ok(StepOutcome::Done));
    }

    fn final_snapshot(status: &'static str) -> Rule {
        mock!(aws_sdk_rds::Client::describe_db_snapshots).then_output(move || {
            DescribeDbSnapshotsOutput::builder()
                .db_snapshots(
                    DbSnapshot::builder()
                        .db_snapshot_identifier(ResourceNames::final_snapshot(
                            &names().database(None),
                        ))
                        .db_instance_identifier(names().database(None))
                        .status(status)
                        .build(),
                )
                .build()
        })
    }

    fn delete_step() -> Step {
        Step::DeleteDatabase {
            identifier: names().database(None),
            final_snapshot_id: ResourceNames::final_snapshot(&names().database(None)),
        }
    }

    #[tokio::test]
    async fn a_protected_database_is_unprotected_then_deleted_without_another_snapshot() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let (o1, o2) = (order.clone(), order.clone());
        let modify = mock!(aws_sdk_rds::Client::modify_db_instance)
            .match_requests(|r| {
                r.deletion_protection() == Some(false) && r.apply_immediately() == Some(true)
            })
            .then_compute_output(move |_| {
                o1.lock().unwrap().push("modify");
                ModifyDbInstanceOutput::builder().build()
            });
        let delete = mock!(aws_sdk_rds::Client::delete_db_instance)
            .match_requests(|r| r.skip_final_snapshot() == Some(true))
            .then_compute_output(move |_| {
                o2.lock().unwrap().push("delete");
                DeleteDbInstanceOutput::builder().build()
            });
        let cloud = Mocks {
            rds: vec![
                db("available", true),
                final_snapshot("available"),
                modify,
                delete,
            ],
            ..Mocks::default()
        }
        .cloud()
        .await;
        assert_eq!(apply(&cloud, &delete_step()).await, Ok(StepOutcome::Done));
        assert_eq!(*order.lock().unwrap(), ["modify", "delete"]);
    }

    #[tokio::test]
    async fn no_database_is_deleted_before_its_final_snapshot_is_available() {
        let delete = mock!(aws_sdk_rds::Client::delete_db_instance)
            .then_output(|| DeleteDbInstanceOutput::builder().build());
        let cloud = Mocks {
            rds: vec![
                db("available", true),
                final_snapshot("creating"),
                delete.clone(),
            ],
            ..Mocks::default()
        }
        .cloud()
        .await;
        let r = apply(&cloud, &delete_step()).await;
        assert!(
            matches!(&r, Err(CloudError::Permanent { code, .. }) if code == "FinalSnapshotMissing"),
            "{r:?}"
        );
        assert_eq!(delete.num_calls(), 0);
    }
}

mod backup {
    use super::*;
    use aws_sdk_backup::operation::describe_backup_job::DescribeBackupJobOutput;
    use aws_sdk_backup::operation::list_tags::ListTagsOutput;
    use aws_sdk_backup::operation::start_backup_job::StartBackupJobOutput;
    use aws_sdk_backup::operation::start_restore_job::StartRestoreJobOutput;
    use aws_sdk_backup::types::BackupJobState;

    const RP: &str = "arn:aws:backup:eu-west-1:123456789012:recovery-point:RP1";

    fn backup_step() -> Step {
        Step::StartBackupJob {
            backup_id: "bk-1".into(),
            root_path: "/tenants/t1/blog".into(),
        }
    }

    #[tokio::test]
    async fn a_backup_job_covers_the_file_system_with_the_token_and_names_the_directory() {
        let token = ClientToken::derive(&key(), 1, &backup_step())
            .as_str()
            .to_owned();
        let start = mock!(aws_sdk_backup::Client::start_backup_job)
            .match_requests(move |r| {
                let tags = r.recovery_point_tags().cloned().unwrap_or_default();
                r.idempotency_token() == Some(token.as_str())
                    && r.resource_arn() == Some(FS_ARN)
                    && r.backup_vault_name() == Some("wpfleet")
                    && tags.get("wpfleet:root-path").map(String::as_str) == Some("/tenants/t1/blog")
                    && tags.get("bbws:instance-id").map(String::as_str) == Some("blog")
            })
            .then_output(|| {
                StartBackupJobOutput::builder()
                    .backup_job_id("JOB-1")
                    .build()
            });
        let cloud = Mocks {
            backup: vec![start.clone()],
            ..Mocks::default()
        }
        .cloud()
        .await;
        assert_eq!(
            apply(&cloud, &backup_step()).await,
            Ok(StepOutcome::Started {
                job_id: "JOB-1".into()
            })
        );
        assert_eq!(start.num_calls(), 1);
    }

    #[tokio::test]
    async fn jobs_are_described_running_until_done_and_unknown_ones_left_out() {
        let running = mock!(aws_sdk_backup::Client::describe_backup_job)
            .match_requests(|r| r.backup_job_id() == Some("RUNNING-1"))
            .then_output(|| {
                DescribeBackupJobOutput::builder()
                    .backup_job_id("RUNNING-1")
                    .state(BackupJobState::Running)
                    .percent_done("37.5")
                    .recovery_point_arn(RP)
                    .build()
            });
        let partial = mock!(aws_sdk_backup::Client::describe_backup_job)
            .match_requests(|r| r.backup_job_id() == Some("PARTIAL-1"))
            .then_output(|| {
                DescribeBackupJobOutput::builder()
                    .backup_job_id("PARTIAL-1")
                    .state(BackupJobState::Partial)
                    .status_message("one item failed")
                    .build()
            });
        let gone = mock!(aws_sdk_backup::Client::describe_restore_job)
            .sequence()
            .http_status(404, Some(json_error("ResourceNotFoundException")))
            .repeatedly()
            .build();
        let cloud = Mocks {
            backup: vec![running, partial, gone],
            ..Mocks::default()
        }
        .cloud()
        .await;
        let job = |kind, id: &str| JobRef {
            kind,
            id: id.into(),
        };
        let seen = cloud
            .describe_jobs(&[
                job(JobKind::Backup, "RUNNING-1"),
                job(JobKind::Restore, "UNKNOWN"),
                job(JobKind::Backup, "PARTIAL-1"),
            ])
            .await
            .unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(
            (
                seen[0].state,
                seen[0].percent_done,
                seen[0].recovery_point_arn.as_deref()
            ),
            (JobState::Running, 37, None),
            "a running job names no recovery point yet"
        );
        assert_eq!(seen[1].state, JobState::Failed);
        assert_eq!(seen[1].message.as_deref(), Some("one item failed"));
    }

    fn rp_tags(tenant: &'static str) -> Rule {
        mock!(aws_sdk_backup::Client::list_tags)
            .match_requests(|r| r.resource_arn() == Some(RP))
            .then_output(move || {
                ListTagsOutput::builder()
                    .tags("wpfleet:root-path", format!("/tenants/{tenant}/blog"))
                    .tags("bbws:tenant-id", tenant)
                    .tags("bbws:instance-id", "blog")
                    .tags("managed-by", "wpfleet")
                    .build()
            })
    }

    fn restore_step() -> Step {
        Step::StartRestoreJob {
            recovery_point_arn: RP.into(),
            target_root: "/tenants/t1/blog/restore-0a1b2c3d".into(),
        }
    }

    #[tokio::test]
    async fn a_restore_job_restores_the_backed_up_directory_into_the_file_system() {
        let start = mock!(aws_sdk_backup::Client::start_restore_job)
            .match_requests(|r| {
                let m = r.metadata().cloned().unwrap_or_default();
                m.get("ItemsToRestore").map(String::as_str) == Some(r#"["/tenants/t1/blog"]"#)
                    && m.get("file-system-id").map(String::as_str) == Some("fs-0123")
                    && m.get("newFileSystem").map(String::as_str) == Some("false")
                    && r.idempotency_token().is_some()
            })
            .then_output(|| {
                StartRestoreJobOutput::builder()
                    .restore_job_id("R-1")
                    .build()
            });
        let cloud = Mocks {
            backup: vec![rp_tags("t1"), start],
            ..Mocks::default()
        }
        .cloud()
        .await;
        assert_eq!(
            apply(&cloud, &restore_step()).await,
            Ok(StepOutcome::Started {
                job_id: "R-1".into()
            })
        );
    }

    #[tokio::test]
    async fn another_instances_recovery_point_is_refused() {
        let start = mock!(aws_sdk_backup::Client::start_restore_job).then_output(|| {
            StartRestoreJobOutput::builder()
                .restore_job_id("R-1")
                .build()
        });
        let cloud = Mocks {
            backup: vec![rp_tags("t2"), start.clone()],
            ..Mocks::default()
        }
        .cloud()
        .await;
        let r = apply(&cloud, &restore_step()).await;
        assert!(
            matches!(&r, Err(CloudError::Permanent { code, .. }) if code == "InvalidRecoveryPoint"),
            "{r:?}"
        );
        assert_eq!(start.num_calls(), 0);
    }
}

mod relocation {
    use super::*;
    use aws_sdk_backup::operation::describe_backup_job::DescribeBackupJobOutput;
    use aws_sdk_backup::operation::describe_restore_job::DescribeRestoreJobOutput;
    use aws_sdk_backup::operation::list_tags::ListTagsOutput;
    use aws_sdk_backup::types::{BackupJobState, RestoreJobStatus};
    use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionOutput;
    use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
    use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionOutput;
    use aws_sdk_ecs::operation::run_task::RunTaskOutput;
    use aws_sdk_ecs::types::{
        Container, ContainerDefinition, EfsAuthorizationConfigIam, EfsVolumeConfiguration, Failure,
        LaunchType, LogConfiguration, LogDriver, Task, TaskDefinition, TaskStopCode, Volume,
    };

    const RP: &str = "arn:aws:backup:eu-west-1:123456789012:recovery-point:RP1";
    const TD: &str = "arn:aws:ecs:eu-west-1:123456789012:task-definition/relocate:1";
    const TASK: &str = "arn:aws:ecs:eu-west-1:123456789012:task/wp/0123456789abcdef";
    /// 2024-05-01T10:00:00Z, and the job took 20 minutes.
    const CREATED: i64 = 1_714_557_600;

    fn target() -> String {
        names().access_point_root(Some("0a1b2c3d"))
    }

    fn step(replaces: Option<&str>) -> Step {
        Step::RelocateRestoredFiles {
            restore_job_id: "RJOB-1".into(),
            target_root: target(),
            replaces: replaces.map(str::to_owned),
        }
    }

    fn restore_job(status: RestoreJobStatus) -> Rule {
        mock!(aws_sdk_backup::Client::describe_restore_job)
            .match_requests(|r| r.restore_job_id() == Some("RJOB-1"))
            .then_output(move || {
                DescribeRestoreJobOutput::builder()
                    .restore_job_id("RJOB-1")
                    .status(status.clone())
                    .recovery_point_arn(RP)
                    .creation_date(aws_sdk_backup::primitives::DateTime::from_secs(CREATED))
                    .completion_date(aws_sdk_backup::primitives::DateTime::from_secs(
                        CREATED + 1_200,
                    ))
                    .build()
            })
    }

    fn rp_tags() -> Rule {
        mock!(aws_sdk_backup::Client::list_tags)
            .match_requests(|r| r.resource_arn() == Some(RP))
            .then_output(|| {
                ListTagsOutput::builder()
                    .tags("wpfleet:root-path", "/tenants/t1/blog")
                    .tags("bbws:tenant-id", "t1")
                    .tags("bbws:instance-id", "blog")
                    .tags("managed-by", "wpfleet")
                    .build()
            })
    }

    fn no_task_definition_yet() -> Rule {
        mock!(aws_sdk_ecs::Client::describe_task_definition)
            .sequence()
            .http_status(400, Some(json_error("ClientException")))
            .repeatedly()
            .build()
    }

    /// The relocation task definition as the driver registers it.
    fn relocation_definition(image: &str) -> TaskDefinition {
        TaskDefinition::builder()
            .task_definition_arn(TD)
            .task_role_arn(&settings().relocation_task_role_arn)
            .execution_role_arn(&settings().task_execution_role_arn)
            .container_definitions(
                ContainerDefinition::builder()
                    .name("relocate")
                    .image(image)
                    .log_configuration(
                        LogConfiguration::builder()
                            .log_driver(LogDriver::Awslogs)
                            .options("awslogs-group", names().log_group)
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .volumes(
                Volume::builder()
                    .name("efs-root")
                    .efs_volume_configuration(
                        EfsVolumeConfiguration::builder()
                            .file_system_id("fs-0123")
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .build()
    }

    fn register() -> Rule {
        mock!(aws_sdk_ecs::Client::register_task_definition)
            .match_requests(|r| {
                let c = &r.container_definitions()[0];
                let volume = r.volumes()[0].efs_volume_configuration().unwrap();
                let auth = volume.authorization_config().unwrap();
                r.family() == Some(format!("{}-relocate", names().service).as_str())
                    && r.task_role_arn() == Some(settings().relocation_task_role_arn.as_str())
                    && c.image() == Some("wpfleet")
                    && c.user() == Some("0")
                    && c.mount_points()[0].container_path() == Some("/mnt/efs")
                    && volume.file_system_id() == "fs-0123"
                    && volume.root_directory() == Some("/")
                    && auth.access_point_id().is_none()
                    && auth.iam() == Some(&EfsAuthorizationConfigIam::Enabled)
            })
            .then_output(|| {
                RegisterTaskDefinitionOutput::builder()
                    .task_definition(relocation_definition("wpfleet"))
                    .build()
            })
    }

    fn run_task(token: String) -> Rule {
        mock!(aws_sdk_ecs::Client::run_task)
            .match_requests(move |r| {
                let command = r.overrides().unwrap().container_overrides()[0].command();
                let tags = r.tags();
                r.client_token() == Some(token.as_str())
                    && r.task_definition() == Some(TD)
                    && r.launch_type() == Some(&LaunchType::Fargate)
                    && r.started_by() == Some("wpfleet-relocate")
                    && command
                        == [
                            "relocate-restore",
                            "--root",
                            "/mnt/efs",
                            "--source",
                            "/tenants/t1/blog",
                            "--target",
                            target().as_str(),
                            "--not-before",
                            "2024-05-01T09:55:00Z",
                            "--not-after",
                            "2024-05-01T10:25:00Z",
                        ]
                    && tags.iter().any(|t| {
                        t.key() == Some("wpfleet:restore-job") && t.value() == Some("RJOB-1")
                    })
                    && tags
                        .iter()
                        .any(|t| t.key() == Some("bbws:instance-id") && t.value() == Some("blog"))
            })
            .then_output(|| {
                RunTaskOutput::builder()
                    .tasks(
                        Task::builder()
                            .task_arn(TASK)
                            .last_status("PROVISIONING")
                            .build(),
                    )
                    .build()
            })
    }

    fn token(replaces: Option<&str>) -> String {
        ClientToken::derive(&key(), 1, &step(replaces))
            .rerun(replaces)
            .as_str()
            .to_owned()
    }

    #[tokio::test]
    async fn the_task_moves_the_completed_jobs_item_within_its_window_under_the_steps_token() {
        let run = run_task(token(None));
        let reg = register();
        let cloud = Mocks {
            backup: vec![restore_job(RestoreJobStatus::Completed), rp_tags()],
            ecs: vec![no_task_definition_yet(), reg.clone(), run.clone()],
            ..Mocks::default()
        }
        .cloud()
        .await;
        assert_eq!(
            apply(&cloud, &step(None)).await,
            Ok(StepOutcome::Started {
                job_id: TASK.into()
            })
        );
        assert_eq!((reg.num_calls(), run.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn a_matching_task_definition_is_reused_and_a_rerun_has_a_token_of_its_own() {
        let current = mock!(aws_sdk_ecs::Client::describe_task_definition).then_output(|| {
            DescribeTaskDefinitionOutput::builder()
                .task_definition(relocation_definition("wpfleet"))
                .build()
        });
        let reg = register();
        let rerun = token(Some("arn:forgotten"));
        assert_ne!(rerun, token(None));
        let run = run_task(rerun);
        let cloud = Mocks {
            backup: vec![restore_job(RestoreJobStatus::Completed), rp_tags()],
            ecs: vec![current, reg.clone(), run.clone()],
            ..Mocks::default()
        }
        .cloud()
        .await;
        assert_eq!(
            apply(&cloud, &step(Some("arn:forgotten"))).await,
            Ok(StepOutcome::Started {
                job_id: TASK.into()
            })
        );
        assert_eq!((reg.num_calls(), run.num_calls()), (0, 1));
    }

    #[tokio::test]
    async fn an_outdated_task_definition_gets_a_new_revision() {
        let old = mock!(aws_sdk_ecs::Client::describe_task_definition).then_output(|| {
            DescribeTaskDefinitionOutput::builder()
                .task_definition(relocation_definition("wpfleet:old"))
                .build()
        });
        let reg = register();
        let cloud = Mocks {
            backup: vec![restore_job(RestoreJobStatus::Completed), rp_tags()],
            ecs: vec![old, reg.clone(), run_task(token(None))],
            ..Mocks::default()
        }
        .cloud()
        .await;
        assert!(apply(&cloud, &step(None)).await.is_ok());
        assert_eq!(reg.num_calls(), 1);
    }

    #[tokio::test]
    async fn nothing_runs_before_the_restore_job_completed_or_without_a_task() {
        let run = run_task(token(None));
        let cloud = Mocks {
            backup: vec![restore_job(RestoreJobStatus::Running), rp_tags()],
            ecs: vec![no_task_definition_yet(), register(), run.clone()],
            ..Mocks::default()
        }
        .cloud()
        .await;
        let early = apply(&cloud, &step(None)).await;
        assert!(
            matches!(&early, Err(CloudError::InvalidState { .. })),
            "{early:?}"
        );
        assert_eq!(run.num_calls(), 0);

        let refused = mock!(aws_sdk_ecs::Client::run_task).then_output(|| {
            RunTaskOutput::builder()
                .failures(Failure::builder().reason("RESOURCE:ENI").build())
                .build()
        });
        let cloud = Mocks {
            backup: vec![restore_job(RestoreJobStatus::Completed), rp_tags()],
            ecs: vec![no_task_definition_yet(), register(), refused],
            ..Mocks::default()
        }
        .cloud()
        .await;
        let r = apply(&cloud, &step(None)).await;
        assert!(
            matches!(&r, Err(e @ CloudError::InvalidState { message, .. }) if e.is_retryable() && message.contains("RESOURCE:ENI")),
            "{r:?}"
        );
    }

    fn stopped(arn: &str, exit: Option<i32>) -> Task {
        let mut container = Container::builder().name("relocate");
        if let Some(code) = exit {
            container = container.exit_code(code);
        }
        Task::builder()
            .task_arn(arn)
            .last_status("STOPPED")
            .stop_code(TaskStopCode::EssentialContainerExited)
            .stopped_reason("CannotPullContainerError: pull access denied")
            .containers(container.build())
            .build()
    }

    #[tokio::test]
    async fn tasks_are_described_by_exit_status_and_forgotten_ones_left_out() {
        let described = mock!(aws_sdk_ecs::Client::describe_tasks)
            .match_requests(|r| r.tasks().len() == 5)
            .then_output(|| {
                DescribeTasksOutput::builder()
                    .tasks(
                        Task::builder()
                            .task_arn("arn:t/running")
                            .last_status("RUNNING")
                            .build(),
                    )
                    .tasks(stopped("arn:t/moved", Some(0)))
                    .tasks(stopped("arn:t/refused", Some(3)))
                    .tasks(stopped("arn:t/never-ran", None))
                    .failures(
                        Failure::builder()
                            .arn("arn:t/forgotten")
                            .reason("MISSING")
                            .build(),
                    )
                    .build()
            });
        let backup = mock!(aws_sdk_backup::Client::describe_backup_job).then_output(|| {
            DescribeBackupJobOutput::builder()
                .backup_job_id("JOB-1")
                .state(BackupJobState::Running)
                .build()
        });
        let cloud = Mocks {
            ecs: vec![described.clone()],
            backup: vec![backup],
            ..Mocks::default()
        }
        .cloud()
        .await;
        let job = |kind, id: &str| JobRef {
            kind,
            id: id.into(),
        };
        let mut refs: Vec<JobRef> = ["running", "moved", "refused", "never-ran", "forgotten"]
            .iter()
            .map(|t| job(JobKind::Relocation, &format!("arn:t/{t}")))
            .collect();
        refs.push(job(JobKind::Backup, "JOB-1"));
        let seen = cloud.describe_jobs(&refs).await.unwrap();
        assert_eq!(
            described.num_calls(),
            1,
            "one DescribeTasks for all of them"
        );
        let of = |id: &str| seen.iter().find(|j| j.id == id).cloned();
        assert_eq!(of("JOB-1").map(|j| j.kind), Some(JobKind::Backup));
        assert_eq!(
            of("arn:t/running").map(|j| j.state),
            Some(JobState::Running)
        );
        assert_eq!(
            of("arn:t/moved").map(|j| j.state),
            Some(JobState::Completed)
        );
        let refused = of("arn:t/refused").unwrap();
        assert_eq!(refused.state, JobState::Failed);
        let why = refused.message.unwrap();
        assert!(
            why.contains("exited with 3") && why.contains("no recovery directory"),
            "{why}"
        );
        let never = of("arn:t/never-ran").unwrap();
        assert_eq!(never.state, JobState::Failed);
        assert!(never.message.unwrap().contains("CannotPullContainerError"));
        assert_eq!(of("arn:t/forgotten"), None, "ECS forgot it: left out");
        assert_eq!(seen.len(), 5);
    }
}

mod errors_and_metrics {
    use super::*;
    use aws_sdk_cloudwatchlogs::operation::describe_log_groups::DescribeLogGroupsOutput;
    use aws_sdk_efs::operation::describe_access_points::DescribeAccessPointsOutput;
    use aws_sdk_rds::operation::describe_db_instances::DescribeDbInstancesOutput;
    use aws_sdk_rds::operation::describe_db_snapshots::DescribeDbSnapshotsOutput;

    /// Every describe `observe` makes answers "nothing", except ECS's (given).
    fn quiet_except_ecs(ecs: Rule) -> Mocks {
        Mocks {
            ecs: vec![ecs],
            efs: vec![
                mock!(aws_sdk_efs::Client::describe_access_points)
                    .then_output(|| DescribeAccessPointsOutput::builder().build()),
            ],
            rds: vec![
                mock!(aws_sdk_rds::Client::describe_db_instances)
                    .then_output(|| DescribeDbInstancesOutput::builder().build()),
                mock!(aws_sdk_rds::Client::describe_db_snapshots)
                    .then_output(|| DescribeDbSnapshotsOutput::builder().build()),
            ],
            logs: vec![
                mock!(aws_sdk_cloudwatchlogs::Client::describe_log_groups)
                    .then_output(|| DescribeLogGroupsOutput::builder().build()),
            ],
            ..Mocks::default()
        }
    }

    fn ecs_failing(status: u16, code: &str) -> Rule {
        mock!(aws_sdk_ecs::Client::describe_services)
            .sequence()
            .http_status(status, Some(json_error(code)))
            .repeatedly()
            .build()
    }

    #[tokio::test]
    async fn throttling_is_retryable_and_counted() {
        let cloud = quiet_except_ecs(ecs_failing(400, "ThrottlingException"))
            .cloud()
            .await;
        let metrics = Arc::new(Metrics::new());
        cloud.set_metrics(metrics.clone());
        let r = cloud.observe(&[key()]).await;
        assert!(
            matches!(r, Err(CloudError::Throttled { service: "ecs", .. })),
            "{r:?}"
        );
        let throttled = metrics
            .aws_throttled
            .with_label_values(&["ecs", "DescribeServices"])
            .get();
        assert_eq!(throttled, 1);
    }

    #[tokio::test]
    async fn access_denied_needs_a_person_and_keeps_aws_message() {
        let cloud = quiet_except_ecs(ecs_failing(400, "AccessDeniedException"))
            .cloud()
            .await;
        let metrics = Arc::new(Metrics::new());
        cloud.set_metrics(metrics.clone());
        match cloud.observe(&[key()]).await {
            Err(CloudError::Permanent { code, message, .. }) => {
                assert_eq!(code, "AccessDeniedException");
                assert_eq!(message, "AWS says AccessDeniedException");
            }
            other => panic!("{other:?}"),
        }
        let errors = metrics
            .aws_errors
            .with_label_values(&["ecs", "DescribeServices", "AccessDeniedException"])
            .get();
        assert_eq!(errors, 1);
    }

    #[tokio::test]
    async fn a_5xx_is_unavailable() {
        let cloud = quiet_except_ecs(ecs_failing(503, "ServiceUnavailable"))
            .cloud()
            .await;
        let r = cloud.observe(&[key()]).await;
        assert!(matches!(r, Err(CloudError::Unavailable { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn the_shared_configuration_retries_adaptively() {
        use aws_sdk_ecs::config::retry::RetryMode;
        let mut settings = settings();
        settings.region = Some("eu-west-1".into());
        let sdk = super::super::shared_config(&settings).load().await;
        let retry = sdk.retry_config().expect("a retry configuration");
        assert_eq!(retry.mode(), RetryMode::Adaptive);
        assert_eq!(retry.max_attempts(), 3);
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("eu-west-1"));
    }
}
