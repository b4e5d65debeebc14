//! ECS: one service per instance on the configured cluster, running a task definition that
//! mounts the instance's EFS access point, points WordPress at its database (endpoint in the
//! environment, password from the RDS-managed secret) and logs to its log group.
//!
//! What the reconciler compares (image, access point, DB endpoint) lives in the task
//! definition, not the service. Task definition revisions are immutable, so their facts are
//! cached by ARN: a steady-state observation costs only DescribeServices (10 per call).
//!
//! Invariants:
//! * a service is looked up by name before it is created (moto, and AWS after a lost
//!   response, would otherwise replace or duplicate it); creates carry the client token;
//! * a new task definition revision is registered only when no active revision of the
//!   family already has the wanted facts, so retried updates do not pile up revisions;
//! * INACTIVE services count as gone;
//! * once its service is deleted, an instance's task definition families (the service's
//!   and the relocation task's) have no ACTIVE revision left.

use std::collections::HashMap;

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerDefinition,
    DeploymentCircuitBreaker, DeploymentConfiguration, DeploymentRolloutState, DesiredStatus,
    EfsAuthorizationConfig, EfsAuthorizationConfigIam, EfsTransitEncryption,
    EfsVolumeConfiguration, HealthCheck, KeyValuePair, LaunchType, LogConfiguration, LogDriver,
    MountPoint, NetworkConfiguration, NetworkMode, PortMapping, PropagateTags, Secret, Service,
    Tag, Task, TaskDefinition, TaskDefinitionStatus, TransportProtocol, Volume,
};

use super::AwsCloud;
use super::call::{Api, AwsResult};
use super::errors::AwsFailure;
use crate::cloud::names::{ResourceNames, tags};
use crate::cloud::{CloudError, ObservedService, ObservedTask, Rollout, ServiceState, StepOutcome};
use crate::model::InstanceKey;

const DESCRIBE_SERVICES: Api = Api::new("ecs", "DescribeServices");
const DESCRIBE_TASK_DEFINITION: Api = Api::new("ecs", "DescribeTaskDefinition");
const REGISTER_TASK_DEFINITION: Api = Api::new("ecs", "RegisterTaskDefinition");
const CREATE_SERVICE: Api = Api::new("ecs", "CreateService");
const UPDATE_SERVICE: Api = Api::new("ecs", "UpdateService");
const DELETE_SERVICE: Api = Api::new("ecs", "DeleteService");
const LIST_TASK_DEFINITIONS: Api = Api::new("ecs", "ListTaskDefinitions");
const DEREGISTER_TASK_DEFINITION: Api = Api::new("ecs", "DeregisterTaskDefinition");
const LIST_TASKS: Api = Api::new("ecs", "ListTasks");
const DESCRIBE_TASKS: Api = Api::new("ecs", "DescribeTasks");

/// DescribeServices takes at most this many names.
pub const SERVICES_PER_CALL: usize = 10;
/// DescribeTasks takes at most this many tasks.
const TASKS_PER_CALL: usize = 100;

/// The container, volume and mount names inside every task definition.
pub const CONTAINER: &str = "wordpress";
const VOLUME: &str = "wp-content";
const CONTENT_PATH: &str = "/var/www/html/wp-content";
/// The environment variable carrying the DB endpoint (the official image's name).
const DB_HOST_VAR: &str = "WORDPRESS_DB_HOST";

/// What differs between the task definitions wpfleet registers.
pub(super) struct FargateTask<'a> {
    pub cpu: &'a str,
    pub memory: &'a str,
    pub task_role_arn: &'a str,
    pub container: ContainerDefinition,
    pub volume: Volume,
}

/// What a task definition says about the data and image the tasks use: the part the
/// reconciler compares with the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFacts {
    /// As the planner names images: `wordpress:{tag}`.
    pub image: String,
    pub access_point_id: String,
    pub db_endpoint: String,
}

/// The service step's arguments.
pub struct ServiceSpec<'a> {
    pub name: &'a str,
    pub desired_count: u32,
    pub facts: TaskFacts,
}

impl AwsCloud {
    /// The services of `names` (ACTIVE or DRAINING), by name.
    pub(super) async fn services_named(
        &self,
        names: &[String],
    ) -> AwsResult<HashMap<String, ObservedService>> {
        let mut found = HashMap::new();
        for chunk in names.chunks(SERVICES_PER_CALL) {
            for svc in self.describe_services(chunk).await? {
                if let Some(observed) = self.observed_service(&svc).await? {
                    found.insert(observed.name.clone(), observed);
                }
            }
        }
        Ok(found)
    }

    async fn describe_services(&self, names: &[String]) -> AwsResult<Vec<Service>> {
        let request = self
            .clients
            .ecs
            .describe_services()
            .cluster(&self.settings.cluster)
            .set_services(Some(names.to_vec()))
            .send();
        let out = self.caller.send(DESCRIBE_SERVICES, request).await?;
        Ok(out.services.unwrap_or_default())
    }

    /// The live service called `name`, if any.
    async fn live_service(&self, name: &str) -> AwsResult<Option<Service>> {
        let services = self.describe_services(&[name.to_owned()]).await?;
        Ok(services
            .into_iter()
            .find(|s| s.service_name() == Some(name) && service_state(s).is_some()))
    }

    async fn observed_service(&self, svc: &Service) -> AwsResult<Option<ObservedService>> {
        let Some(state) = service_state(svc) else {
            return Ok(None);
        };
        let facts = match svc.task_definition() {
            Some(arn) => self.task_facts(arn).await?,
            None => TaskFacts {
                image: String::new(),
                access_point_id: String::new(),
                db_endpoint: String::new(),
            },
        };
        let desired = count(svc.desired_count());
        let running = count(svc.running_count());
        let pending = count(svc.pending_count());
        Ok(Some(ObservedService {
            name: svc.service_name().unwrap_or_default().to_owned(),
            arn: svc.service_arn().unwrap_or_default().to_owned(),
            state,
            desired_count: desired,
            running_count: running,
            pending_count: pending,
            image: facts.image,
            access_point_id: facts.access_point_id,
            db_endpoint: facts.db_endpoint,
            rollout: rollout(svc, desired, running, pending),
            deployment: primary_deployment(svc)
                .filter(|d| d.rollout_state().is_some())
                .and_then(|d| d.id())
                .map(str::to_owned),
        }))
    }

    /// The facts of a task definition revision (cached: revisions never change).
    async fn task_facts(&self, arn: &str) -> AwsResult<TaskFacts> {
        if let Some(facts) = self.lock(&self.task_defs).get(arn) {
            return Ok(facts.clone());
        }
        let request = self
            .clients
            .ecs
            .describe_task_definition()
            .task_definition(arn)
            .send();
        let out = self.caller.send(DESCRIBE_TASK_DEFINITION, request).await?;
        let facts = out
            .task_definition
            .as_ref()
            .map(|td| self.facts_of(td))
            .unwrap_or_else(|| self.facts_of(&TaskDefinition::builder().build()));
        self.lock(&self.task_defs)
            .insert(arn.to_owned(), facts.clone());
        Ok(facts)
    }

    /// Reads image, access point and DB endpoint back out of a task definition.
    pub(super) fn facts_of(&self, td: &TaskDefinition) -> TaskFacts {
        let container = td
            .container_definitions()
            .iter()
            .find(|c| c.name() == Some(CONTAINER));
        let image = container.and_then(|c| c.image()).unwrap_or_default();
        let db_endpoint = container
            .map(|c| c.environment())
            .unwrap_or_default()
            .iter()
            .find(|kv| kv.name() == Some(DB_HOST_VAR))
            .and_then(|kv| kv.value())
            .unwrap_or_default();
        let access_point_id = td
            .volumes()
            .iter()
            .find(|v| v.name() == Some(VOLUME))
            .and_then(|v| v.efs_volume_configuration())
            .and_then(|efs| efs.authorization_config())
            .and_then(|auth| auth.access_point_id())
            .unwrap_or_default();
        TaskFacts {
            image: self.planner_image(image),
            access_point_id: access_point_id.to_owned(),
            db_endpoint: db_endpoint.to_owned(),
        }
    }

    /// `wordpress:{tag}` (the planner's name) for `{repository}:{tag}`.
    fn planner_image(&self, image: &str) -> String {
        match image.strip_prefix(&format!("{}:", self.settings.wordpress_image)) {
            Some(tag) => format!("wordpress:{tag}"),
            None => image.to_owned(),
        }
    }

    /// `{repository}:{tag}` for the planner's `wordpress:{tag}`.
    fn aws_image(&self, image: &str) -> String {
        match image.strip_prefix("wordpress:") {
            Some(tag) => format!("{}:{tag}", self.settings.wordpress_image),
            None => image.to_owned(),
        }
    }

    /// The running tasks of each key's service: ListTasks per service (ECS lists one
    /// service at a time), then DescribeTasks per 100 of all the tasks found, across
    /// services; none when nothing was found (AWS rejects an empty DescribeTasks).
    pub(super) async fn service_tasks(
        &self,
        keys: &[InstanceKey],
    ) -> AwsResult<Vec<Vec<ObservedTask>>> {
        let names: Vec<String> = keys
            .iter()
            .map(|k| ResourceNames::for_key(k).service)
            .collect();
        let listed = futures::future::try_join_all(names.iter().map(|n| self.task_arns(n))).await?;
        let arns: Vec<String> = listed.into_iter().flatten().collect();
        let mut by_group: HashMap<String, Vec<ObservedTask>> = HashMap::new();
        for t in self.describe_task_arns(&arns).await? {
            if t.last_status() == Some("STOPPED") {
                continue;
            }
            // The task's group names its service: ListTasks already filtered by
            // service, and the group keeps servers that ignore the filter honest.
            if let Some(group) = t.group() {
                by_group
                    .entry(group.to_owned())
                    .or_default()
                    .push(self.observed_task(&t));
            }
        }
        Ok(names
            .iter()
            .map(|name| {
                let mut tasks = by_group
                    .remove(&format!("service:{name}"))
                    .unwrap_or_default();
                tasks.sort_by(|a, b| a.id.cmp(&b.id));
                tasks
            })
            .collect())
    }

    /// DescribeTasks of `arns`, as many calls as AWS's 100 tasks per call need. Tasks ECS no
    /// longer knows are not in the result.
    pub(super) async fn describe_task_arns(&self, arns: &[String]) -> AwsResult<Vec<Task>> {
        let mut tasks = Vec::new();
        for chunk in arns.chunks(TASKS_PER_CALL) {
            let request = self
                .clients
                .ecs
                .describe_tasks()
                .cluster(&self.settings.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send();
            let out = self.caller.send(DESCRIBE_TASKS, request).await?;
            tasks.extend(out.tasks.unwrap_or_default());
        }
        Ok(tasks)
    }

    /// ListTasks (all pages) of service `name`'s tasks meant to run.
    async fn task_arns(&self, name: &str) -> AwsResult<Vec<String>> {
        let mut arns = Vec::new();
        let mut next = None;
        loop {
            let request = self
                .clients
                .ecs
                .list_tasks()
                .cluster(&self.settings.cluster)
                .service_name(name)
                .desired_status(DesiredStatus::Running)
                .set_next_token(next)
                .send();
            let out = self.caller.send(LIST_TASKS, request).await?;
            arns.extend(out.task_arns.unwrap_or_default());
            next = out.next_token;
            if next.is_none() {
                return Ok(arns);
            }
        }
    }

    fn observed_task(&self, t: &Task) -> ObservedTask {
        let id = t
            .task_arn()
            .and_then(|arn| arn.rsplit('/').next())
            .unwrap_or_default();
        let image = t
            .containers()
            .iter()
            .find(|c| c.name() == Some(CONTAINER))
            .or_else(|| t.containers().first())
            .and_then(|c| c.image())
            .unwrap_or_default();
        ObservedTask {
            id: id.to_owned(),
            last_status: t.last_status().unwrap_or("PROVISIONING").to_owned(),
            health: task_health(t).to_owned(),
            started_at: t
                .started_at()
                .and_then(|d| crate::model::Timestamp::from_timestamp_millis(d.to_millis().ok()?)),
            image: self.planner_image(image),
        }
    }

    /// CreateService, unless a live service of that name exists (it is then the
    /// planner's job to update it).
    pub(super) async fn create_service(
        &self,
        key: &InstanceKey,
        spec: &ServiceSpec<'_>,
        token: &str,
    ) -> AwsResult<StepOutcome> {
        if let Some(existing) = self.live_service(spec.name).await? {
            if service_state(&existing) == Some(ServiceState::Draining) {
                return Err(in_progress(
                    CREATE_SERVICE,
                    format!("service {} is still draining", spec.name),
                ));
            }
            return Ok(StepOutcome::Done);
        }
        let task_definition = self
            .task_definition_for(key, spec.name, &spec.facts)
            .await?;
        let network = self.task_network(CREATE_SERVICE)?;
        let request = self
            .clients
            .ecs
            .create_service()
            .cluster(&self.settings.cluster)
            .service_name(spec.name)
            .task_definition(task_definition)
            .desired_count(i32::try_from(spec.desired_count).unwrap_or(i32::MAX))
            .launch_type(LaunchType::Fargate)
            .network_configuration(network)
            .deployment_configuration(
                DeploymentConfiguration::builder()
                    .minimum_healthy_percent(100)
                    .maximum_percent(200)
                    .deployment_circuit_breaker(
                        DeploymentCircuitBreaker::builder()
                            .enable(true)
                            .rollback(true)
                            .build(),
                    )
                    .build(),
            )
            .client_token(token)
            .propagate_tags(PropagateTags::Service)
            .enable_ecs_managed_tags(true)
            .set_tags(Some(ecs_tags(key)))
            .send();
        self.caller.send(CREATE_SERVICE, request).await?;
        Ok(StepOutcome::Done)
    }

    /// UpdateService towards count and facts; a new task definition only when the facts
    /// differ from the service's.
    pub(super) async fn update_service(
        &self,
        key: &InstanceKey,
        spec: &ServiceSpec<'_>,
    ) -> AwsResult<StepOutcome> {
        let Some(svc) = self.live_service(spec.name).await? else {
            return Err(in_progress(
                UPDATE_SERVICE,
                format!(
                    "ServiceNotFoundException: service {} does not exist",
                    spec.name
                ),
            ));
        };
        if service_state(&svc) == Some(ServiceState::Draining) {
            return Err(in_progress(
                UPDATE_SERVICE,
                format!(
                    "ServiceNotActiveException: service {} is draining",
                    spec.name
                ),
            ));
        }
        let current = match svc.task_definition() {
            Some(arn) => Some((arn.to_owned(), self.task_facts(arn).await?)),
            None => None,
        };
        let task_definition = match current {
            Some((arn, facts)) if facts == spec.facts => arn,
            _ => {
                self.task_definition_for(key, spec.name, &spec.facts)
                    .await?
            }
        };
        let request = self
            .clients
            .ecs
            .update_service()
            .cluster(&self.settings.cluster)
            .service(spec.name)
            .desired_count(i32::try_from(spec.desired_count).unwrap_or(i32::MAX))
            .task_definition(task_definition)
            .send();
        self.caller.send(UPDATE_SERVICE, request).await?;
        Ok(StepOutcome::Done)
    }

    /// Where the tasks run (WordPress's and the relocation task's): the configured subnets
    /// and security groups, which reach the EFS mount targets and the databases; no public IP.
    pub(super) fn task_network(&self, api: Api) -> AwsResult<NetworkConfiguration> {
        let vpc = AwsVpcConfiguration::builder()
            .set_subnets(Some(self.settings.subnets.clone()))
            .set_security_groups(Some(self.settings.security_groups.clone()))
            .assign_public_ip(AssignPublicIp::Disabled)
            .build()
            .map_err(|e| build_error(api, e))?;
        Ok(NetworkConfiguration::builder()
            .awsvpc_configuration(vpc)
            .build())
    }

    /// DeleteService (forced: ECS stops the tasks); a missing or inactive one is fine. Then
    /// the instance's task definitions are deregistered: ECS keeps ACTIVE revisions forever,
    /// and a deleted instance must leave nothing of its own behind. (Running tasks of a
    /// deregistered revision are unaffected, so the order is safe; a revision is never
    /// deregistered while the service exists, as the circuit breaker may roll back to it.)
    pub(super) async fn delete_service(&self, name: &str) -> AwsResult<StepOutcome> {
        let request = self
            .clients
            .ecs
            .delete_service()
            .cluster(&self.settings.cluster)
            .service(name)
            .force(true)
            .send();
        match self.caller.send(DELETE_SERVICE, request).await {
            Ok(_) => {}
            Err(f) if f.is(&["ServiceNotFoundException", "ServiceNotActiveException"]) => {}
            Err(f) => return Err(f),
        }
        for family in [name.to_owned(), super::relocation::family_of_service(name)] {
            self.deregister_family(&family).await?;
        }
        Ok(StepOutcome::Done)
    }

    /// Deregisters every ACTIVE revision of exactly `family` (ListTaskDefinitions matches by
    /// prefix, so `wp-t-a` would also list `wp-t-ab`'s revisions: filtered by ARN).
    async fn deregister_family(&self, family: &str) -> AwsResult<()> {
        for arn in self.active_revisions(family).await? {
            let request = self
                .clients
                .ecs
                .deregister_task_definition()
                .task_definition(&arn)
                .send();
            match self.caller.send(DEREGISTER_TASK_DEFINITION, request).await {
                Ok(_) => {}
                // Already INACTIVE (a retried step, or another replica): done.
                Err(f) if f.is(&["ClientException"]) => {}
                Err(f) => return Err(f),
            }
        }
        Ok(())
    }

    async fn active_revisions(&self, family: &str) -> AwsResult<Vec<String>> {
        let mut arns = Vec::new();
        let mut next_token = None;
        loop {
            let request = self
                .clients
                .ecs
                .list_task_definitions()
                .family_prefix(family)
                .status(TaskDefinitionStatus::Active)
                .set_next_token(next_token)
                .send();
            let out = self.caller.send(LIST_TASK_DEFINITIONS, request).await?;
            arns.extend(
                out.task_definition_arns()
                    .iter()
                    .filter(|arn| family_of_arn(arn) == Some(family))
                    .cloned(),
            );
            next_token = out.next_token;
            if next_token.is_none() {
                return Ok(arns);
            }
        }
    }

    /// The ARN of an active revision of `family` with `facts`, registering one if needed.
    async fn task_definition_for(
        &self,
        key: &InstanceKey,
        family: &str,
        facts: &TaskFacts,
    ) -> AwsResult<String> {
        let request = self
            .clients
            .ecs
            .describe_task_definition()
            .task_definition(family)
            .send();
        match self.caller.send(DESCRIBE_TASK_DEFINITION, request).await {
            Ok(out) => {
                if let Some(td) = out.task_definition
                    && let Some(arn) = td.task_definition_arn()
                {
                    let latest = self.facts_of(&td);
                    self.lock(&self.task_defs)
                        .insert(arn.to_owned(), latest.clone());
                    if &latest == facts {
                        return Ok(arn.to_owned());
                    }
                }
            }
            // No revision yet: ECS answers ClientException.
            Err(f) if f.is(&["ClientException"]) => {}
            Err(f) => return Err(f),
        }
        self.register_task_definition(key, family, facts).await
    }

    async fn register_task_definition(
        &self,
        key: &InstanceKey,
        family: &str,
        facts: &TaskFacts,
    ) -> AwsResult<String> {
        let api = REGISTER_TASK_DEFINITION;
        let secret_arn = self.db_secret_arn(&facts.db_endpoint).await?;
        let container = self.container(key, facts, secret_arn.as_deref(), api)?;
        let volume = Volume::builder()
            .name(VOLUME)
            .efs_volume_configuration(
                EfsVolumeConfiguration::builder()
                    .file_system_id(&self.settings.file_system_id)
                    .transit_encryption(EfsTransitEncryption::Enabled)
                    .authorization_config(
                        EfsAuthorizationConfig::builder()
                            .access_point_id(&facts.access_point_id)
                            .iam(EfsAuthorizationConfigIam::Enabled)
                            .build(),
                    )
                    .build()
                    .map_err(|e| build_error(api, e))?,
            )
            .build();
        let td = self
            .register_fargate_task_definition(
                key,
                family,
                FargateTask {
                    cpu: &self.settings.task_cpu,
                    memory: &self.settings.task_memory,
                    task_role_arn: &self.settings.task_role_arn,
                    container,
                    volume,
                },
            )
            .await?;
        let arn = td.task_definition_arn().unwrap_or_default().to_owned();
        self.lock(&self.task_defs)
            .insert(arn.clone(), self.facts_of(&td));
        Ok(arn)
    }

    /// RegisterTaskDefinition of a Fargate family in the tasks' network mode, run by the
    /// task execution role and tagged with the instance (the WordPress service's and the
    /// relocation task's).
    pub(super) async fn register_fargate_task_definition(
        &self,
        key: &InstanceKey,
        family: &str,
        task: FargateTask<'_>,
    ) -> AwsResult<TaskDefinition> {
        let request = self
            .clients
            .ecs
            .register_task_definition()
            .family(family)
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu(task.cpu)
            .memory(task.memory)
            .execution_role_arn(&self.settings.task_execution_role_arn)
            .task_role_arn(task.task_role_arn)
            .container_definitions(task.container)
            .volumes(task.volume)
            .set_tags(Some(ecs_tags(key)))
            .send();
        let out = self.caller.send(REGISTER_TASK_DEFINITION, request).await?;
        out.task_definition.ok_or_else(|| {
            in_progress(
                REGISTER_TASK_DEFINITION,
                "RegisterTaskDefinition returned nothing".into(),
            )
        })
    }

    fn container(
        &self,
        key: &InstanceKey,
        facts: &TaskFacts,
        secret_arn: Option<&str>,
        api: Api,
    ) -> AwsResult<ContainerDefinition> {
        let env = |name: &str, value: &str| KeyValuePair::builder().name(name).value(value).build();
        let password = secret_arn
            .map(|arn| {
                Secret::builder()
                    .name("WORDPRESS_DB_PASSWORD")
                    // The RDS-managed secret is JSON {username, password}; pick the key.
                    .value_from(format!("{arn}:password::"))
                    .build()
                    .map_err(|e| build_error(api, e))
            })
            .transpose()?;
        let log = LogConfiguration::builder()
            .log_driver(LogDriver::Awslogs)
            .options("awslogs-group", ResourceNames::for_key(key).log_group)
            .options("awslogs-region", &self.account.region)
            .options("awslogs-stream-prefix", CONTAINER)
            .build()
            .map_err(|e| build_error(api, e))?;
        let health = HealthCheck::builder()
            .command("CMD-SHELL")
            .command(
                "curl -fsS -o /dev/null http://localhost/wp-includes/images/blank.gif || exit 1",
            )
            .interval(30)
            .timeout(5)
            .retries(3)
            .start_period(60)
            .build()
            .map_err(|e| build_error(api, e))?;
        // Container memory equals the task's: a hard limit Fargate accepts, and local
        // AWS-compatible servers need it to place tasks.
        let memory = self.settings.task_memory.parse::<i32>().unwrap_or(1024);
        Ok(ContainerDefinition::builder()
            .name(CONTAINER)
            .image(self.aws_image(&facts.image))
            .essential(true)
            .memory(memory)
            .port_mappings(
                PortMapping::builder()
                    .container_port(80)
                    .protocol(TransportProtocol::Tcp)
                    .build(),
            )
            .environment(env(DB_HOST_VAR, &facts.db_endpoint))
            .environment(env("WORDPRESS_DB_USER", &self.settings.db_master_username))
            .environment(env("WORDPRESS_DB_NAME", super::rds::DB_NAME))
            .set_secrets(password.map(|p| vec![p]))
            .mount_points(
                MountPoint::builder()
                    .source_volume(VOLUME)
                    .container_path(CONTENT_PATH)
                    .read_only(false)
                    .build(),
            )
            .log_configuration(log)
            .health_check(health)
            .build())
    }
}

/// ACTIVE → Active, DRAINING → Draining, INACTIVE (or unknown) → gone.
fn service_state(svc: &Service) -> Option<ServiceState> {
    match svc.status() {
        Some("ACTIVE") => Some(ServiceState::Active),
        Some("DRAINING") => Some(ServiceState::Draining),
        _ => None,
    }
}

/// The primary deployment's rollout state; without deployments (or rollout states),
/// settled counts mean completed.
fn rollout(svc: &Service, desired: u32, running: u32, pending: u32) -> Rollout {
    match primary_deployment(svc).and_then(|d| d.rollout_state()) {
        Some(DeploymentRolloutState::Completed) => Rollout::Completed,
        Some(DeploymentRolloutState::Failed) => Rollout::Failed,
        Some(_) => Rollout::InProgress,
        None if running == desired && pending == 0 => Rollout::Completed,
        None => Rollout::InProgress,
    }
}

fn primary_deployment(svc: &Service) -> Option<&aws_sdk_ecs::types::Deployment> {
    svc.deployments()
        .iter()
        .find(|d| d.status() == Some("PRIMARY"))
}

/// ECS's task health; where a server reports only the containers', their aggregate (what
/// ECS derives the task's from: every essential container healthy).
fn task_health(t: &Task) -> &'static str {
    use aws_sdk_ecs::types::HealthStatus;
    let word = |h: &HealthStatus| match h {
        HealthStatus::Healthy => "HEALTHY",
        HealthStatus::Unhealthy => "UNHEALTHY",
        _ => "UNKNOWN",
    };
    if let Some(h) = t.health_status() {
        return word(h);
    }
    let containers: Vec<&str> = t
        .containers()
        .iter()
        .map(|c| c.health_status().map_or("UNKNOWN", word))
        .collect();
    if containers.contains(&"UNHEALTHY") {
        "UNHEALTHY"
    } else if !containers.is_empty() && containers.iter().all(|h| *h == "HEALTHY") {
        "HEALTHY"
    } else {
        "UNKNOWN"
    }
}

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

pub(super) fn ecs_tags(key: &InstanceKey) -> Vec<Tag> {
    tags(key)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

pub(super) fn in_progress(api: Api, message: String) -> AwsFailure {
    AwsFailure {
        code: None,
        error: CloudError::InvalidState {
            service: api.service,
            operation: api.operation,
            message,
        },
    }
}

pub(super) fn build_error(api: Api, e: impl std::fmt::Display) -> AwsFailure {
    AwsFailure {
        code: None,
        error: CloudError::Permanent {
            service: api.service,
            operation: api.operation,
            code: "RequestConstruction".into(),
            message: e.to_string(),
        },
    }
}

/// `family` of `arn:aws:ecs:{region}:{account}:task-definition/{family}:{revision}`.
fn family_of_arn(arn: &str) -> Option<&str> {
    let (_, name) = arn.rsplit_once(":task-definition/")?;
    Some(name.rsplit_once(':').map_or(name, |(family, _)| family))
}
