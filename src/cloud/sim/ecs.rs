//! ECS services and their tasks.
//!
//! A task stores the absolute times of its whole life (PROVISIONING → PENDING → RUNNING →
//! healthy, and once asked to stop, the stop and the moment it is gone); its status at `t`
//! is read off those times. A service mutation only ever stamps times on tasks: launching
//! new ones, or setting `stop_at` on existing ones (possibly in the future, when an old
//! deployment's task waits for its replacement to run).
//!
//! Invariants:
//! * Only tasks of the primary deployment (`deployment == service.deployment`) count
//!   towards `desired`; older deployments' tasks all have a `stop_at`.
//! * A task's `stop_at` only ever moves earlier; `gone_at` is always `stop_at` + the stop
//!   time.
//! * A draining service has `desired == 0`, every task stopping, and is gone once its last
//!   task is.
//! * A new deployment starts whenever the image, the access point or the database endpoint
//!   changes (each is a new task definition revision in ECS).
//! * Tasks that are pruned from a service (or whose service is swept) and ever ran are
//!   remembered in the service name's [`TaskHistory`] (the newest [`MAX_PAST_TASKS`]), so
//!   their log lines can still be derived; nothing else reads the history.

use serde::{Deserialize, Serialize};

use super::calls::Api;
use super::clock::{Ctx, Millis, base, hex_id};
use super::inventory::{Inventory, RecordKey};
use super::log_events::Source;
use super::view::{ServiceView, TaskView};
use crate::cloud::{
    AccessPointState, CloudResult, ObservedService, ObservedTask, Rollout, ServiceState,
};
use crate::model::{InstanceKey, Timestamp};

/// How many stopped tasks' timelines a service name remembers for its logs.
pub const MAX_PAST_TASKS: usize = 50;

/// What the logs need of a task that is gone: when it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PastTask {
    pub id: String,
    pub image: String,
    pub running_at: Millis,
    pub stop_at: Millis,
}

/// The stopped tasks of one service name, oldest first, at most [`MAX_PAST_TASKS`].
/// Outlives the service (a deleted instance's logs stay readable until its log group goes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TaskHistory {
    pub service: String,
    pub key: InstanceKey,
    pub tasks: Vec<PastTask>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TaskRec {
    pub id: String,
    pub deployment: u32,
    pub image: String,
    pub launched_at: Millis,
    pub pending_at: Millis,
    pub running_at: Millis,
    pub healthy_at: Millis,
    pub stop_at: Option<Millis>,
    pub gone_at: Option<Millis>,
}

/// Where a task is in its life at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Provisioning,
    Pending,
    Running,
    Deactivating,
    Stopping,
    Gone,
}

impl TaskRec {
    fn launch(ctx: &Ctx, deployment: u32, image: &str) -> Self {
        let pending_at = ctx.after(base::TASK_PROVISION);
        let running_at = pending_at.saturating_add(ctx.span(base::TASK_PENDING));
        Self {
            id: hex_id(32),
            deployment,
            image: image.to_owned(),
            launched_at: ctx.now,
            pending_at,
            running_at,
            healthy_at: running_at.saturating_add(ctx.span(base::TASK_HEALTHY)),
            stop_at: None,
            gone_at: None,
        }
    }

    fn phase(&self, t: Millis) -> Phase {
        if self.gone_at.is_some_and(|g| g <= t) {
            return Phase::Gone;
        }
        if let (Some(stop), Some(gone)) = (self.stop_at, self.gone_at)
            && stop <= t
        {
            // A running task first deregisters (DEACTIVATING), then stops.
            let was_running = self.running_at <= stop;
            let halfway = stop + (gone - stop) / 2;
            return if was_running && t < halfway {
                Phase::Deactivating
            } else {
                Phase::Stopping
            };
        }
        if t >= self.running_at {
            Phase::Running
        } else if t >= self.pending_at {
            Phase::Pending
        } else {
            Phase::Provisioning
        }
    }

    fn is_gone(&self, t: Millis) -> bool {
        self.phase(t) == Phase::Gone
    }

    /// Not yet asked to stop (or asked to stop only later) at `t`.
    fn is_live(&self, t: Millis) -> bool {
        self.stop_at.is_none_or(|s| s > t)
    }

    /// Asks the task to stop at `at` unless it already stops earlier.
    fn stop(&mut self, ctx: &Ctx, at: Millis) {
        if self.stop_at.is_some_and(|s| s <= at) {
            return;
        }
        self.stop_at = Some(at);
        self.gone_at = Some(at.saturating_add(ctx.span(base::TASK_STOP)));
    }

    /// The task's clock stops at its stop time: health and start are as they were then.
    fn frozen(&self, t: Millis) -> Millis {
        self.stop_at.map_or(t, |s| s.min(t))
    }

    fn last_status(&self, t: Millis) -> &'static str {
        match self.phase(t) {
            Phase::Provisioning => "PROVISIONING",
            Phase::Pending => "PENDING",
            Phase::Running => "RUNNING",
            Phase::Deactivating => "DEACTIVATING",
            Phase::Stopping => "STOPPING",
            Phase::Gone => "STOPPED",
        }
    }

    fn health(&self, t: Millis) -> &'static str {
        if self.frozen(t) >= self.healthy_at {
            "HEALTHY"
        } else {
            "UNKNOWN"
        }
    }

    fn started_at(&self, t: Millis) -> Option<Timestamp> {
        (self.frozen(t) >= self.running_at)
            .then(|| Timestamp::from_timestamp_millis(self.running_at))
            .flatten()
    }

    pub fn observed(&self, t: Millis) -> ObservedTask {
        ObservedTask {
            id: self.id.clone(),
            last_status: self.last_status(t).to_owned(),
            health: self.health(t).to_owned(),
            started_at: self.started_at(t),
            image: self.image.clone(),
        }
    }

    /// Its timeline, if it ever ran (a task stopped before RUNNING wrote no logs).
    pub(super) fn past(&self) -> Option<PastTask> {
        let stop_at = self.stop_at?;
        (self.running_at < stop_at).then(|| PastTask {
            id: self.id.clone(),
            image: self.image.clone(),
            running_at: self.running_at,
            stop_at,
        })
    }

    fn log_source(&self) -> Source {
        Source::new(&self.id, &self.image, self.running_at, self.stop_at)
    }

    fn view(&self, t: Millis) -> TaskView {
        TaskView {
            id: self.id.clone(),
            last_status: self.last_status(t).to_owned(),
            health: self.health(t).to_owned(),
            started_at: self.started_at(t),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServiceRec {
    pub name: String,
    pub key: InstanceKey,
    pub client_token: String,
    /// Image of the primary deployment.
    pub image: String,
    pub desired: u32,
    /// Number of the primary deployment; +1 on every image change.
    pub deployment: u32,
    /// The deployment (number) that reached a steady state: ECS never takes a deployment's
    /// COMPLETED back (a later change of count or a replaced task does not), so this is
    /// stamped before every change of the service and read by `rollout`.
    #[serde(default)]
    pub completed: Option<u32>,
    pub access_point_id: String,
    pub db_endpoint: String,
    pub created_at: Millis,
    /// When DeleteService was accepted.
    pub deleted_at: Option<Millis>,
    pub tasks: Vec<TaskRec>,
}

/// ECS's quota of tasks per service; a larger desired count is refused, as ECS does (and
/// it keeps a bad input from making the sim launch billions of tasks).
pub(super) const MAX_TASKS_PER_SERVICE: u32 = 5_000;

fn check_count(api: Api, desired: u32) -> CloudResult<()> {
    if desired > MAX_TASKS_PER_SERVICE {
        return Err(api.permanent(
            "InvalidParameterException",
            format!(
                "desiredCount {desired} exceeds the {MAX_TASKS_PER_SERVICE} tasks per service quota"
            ),
        ));
    }
    Ok(())
}

/// Arguments of UpdateService: the whole wanted configuration.
pub(super) struct ServiceUpdate<'a> {
    pub name: &'a str,
    pub desired_count: u32,
    pub image: &'a str,
    pub access_point_id: &'a str,
    pub db_endpoint: &'a str,
}

/// Arguments of CreateService.
pub(super) struct NewService<'a> {
    pub name: &'a str,
    pub desired_count: u32,
    pub image: &'a str,
    pub access_point_id: &'a str,
    pub db_endpoint: &'a str,
    pub token: &'a str,
}

impl ServiceRec {
    fn new(ctx: &Ctx, key: &InstanceKey, new: &NewService<'_>) -> Self {
        let mut svc = Self {
            name: new.name.to_owned(),
            key: key.clone(),
            client_token: new.token.to_owned(),
            image: new.image.to_owned(),
            desired: new.desired_count,
            deployment: 1,
            completed: None,
            access_point_id: new.access_point_id.to_owned(),
            db_endpoint: new.db_endpoint.to_owned(),
            created_at: ctx.now,
            deleted_at: None,
            tasks: Vec::new(),
        };
        svc.converge(ctx);
        svc
    }

    pub fn arn(&self) -> String {
        format!(
            "arn:aws:ecs:eu-west-1:123456789012:service/wpfleet/{}",
            self.name
        )
    }

    pub fn is_draining(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// A draining service disappears once its last task is gone.
    pub fn is_gone(&self, t: Millis) -> bool {
        self.deleted_at.is_some_and(|d| d <= t) && self.tasks.iter().all(|task| task.is_gone(t))
    }

    /// Tasks that exist at `t`.
    pub fn tasks_at(&self, t: Millis) -> impl Iterator<Item = &TaskRec> {
        self.tasks.iter().filter(move |task| !task.is_gone(t))
    }

    fn count(&self, t: Millis, phases: &[Phase]) -> u32 {
        let n = self
            .tasks
            .iter()
            .filter(|task| phases.contains(&task.phase(t)))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn running(&self, t: Millis) -> u32 {
        self.count(t, &[Phase::Running])
    }

    fn pending(&self, t: Millis) -> u32 {
        self.count(t, &[Phase::Provisioning, Phase::Pending])
    }

    /// The primary deployment's rollout state, as ECS reports it for a service whose task
    /// definition has a container health check: COMPLETED once `desired` of its tasks run
    /// *and pass the health check* and no older task is left (a steady state), and from
    /// then on, whatever later changes of count do (see `completed`).
    fn rollout(&self, t: Millis) -> Rollout {
        if self.completed == Some(self.deployment) || self.steady(t) {
            Rollout::Completed
        } else {
            Rollout::InProgress
        }
    }

    /// `desired` healthy running tasks of the primary deployment, none of an older one.
    fn steady(&self, t: Millis) -> bool {
        let healthy = self
            .tasks
            .iter()
            .filter(|task| {
                task.deployment == self.deployment
                    && task.phase(t) == Phase::Running
                    && task.health(t) == "HEALTHY"
            })
            .count();
        let old_remain = self
            .tasks_at(t)
            .any(|task| task.deployment != self.deployment);
        healthy as u64 >= u64::from(self.desired) && !old_remain
    }

    /// Stamps a deployment that reached its steady state by `t`, before a change. Between
    /// two changes a deployment only moves towards it, so stamping at each change is exact.
    fn stamp_completion(&mut self, t: Millis) {
        if self.completed != Some(self.deployment) && self.steady(t) {
            self.completed = Some(self.deployment);
        }
    }

    /// ECS's deployment id: unique per service incarnation and deployment.
    fn deployment_id(&self) -> String {
        format!("ecs-svc/{:x}{:04}", self.created_at, self.deployment)
    }

    /// Launches or stops primary tasks until `desired` of them are live, as ECS's service
    /// scheduler does. Excess tasks are the newest ones.
    fn converge(&mut self, ctx: &Ctx) {
        let mut live: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| {
                let task = &self.tasks[i];
                task.deployment == self.deployment && task.is_live(ctx.now)
            })
            .collect();
        let desired = self.desired as usize;
        if live.len() > desired {
            live.sort_by_key(|&i| std::cmp::Reverse(self.tasks[i].launched_at));
            for &i in &live[..live.len() - desired] {
                self.tasks[i].stop(ctx, ctx.now);
            }
        }
        for _ in live.len()..desired {
            self.tasks
                .push(TaskRec::launch(ctx, self.deployment, &self.image));
        }
    }

    /// A change of count only: no new deployment (ECS keeps the primary one, and its
    /// rollout state, as they are).
    fn scale(&mut self, ctx: &Ctx, desired: u32) {
        self.stamp_completion(ctx.now);
        self.desired = desired;
        self.converge(ctx);
    }

    /// A new primary deployment: `desired` new tasks now; each old task stops when a new
    /// one reaches RUNNING (minimum healthy 100 %, maximum 200 %).
    fn roll(&mut self, ctx: &Ctx, config: &ServiceUpdate<'_>) {
        self.stamp_completion(ctx.now);
        self.deployment = self.deployment.saturating_add(1);
        self.image = config.image.to_owned();
        self.access_point_id = config.access_point_id.to_owned();
        self.db_endpoint = config.db_endpoint.to_owned();
        self.desired = config.desired_count;
        let first_new = self.tasks.len();
        self.converge(ctx);
        let mut ready: Vec<Millis> = self.tasks[first_new..]
            .iter()
            .map(|t| t.running_at)
            .collect();
        ready.sort_unstable();
        let deployment = self.deployment;
        let mut old: Vec<&mut TaskRec> = self
            .tasks
            .iter_mut()
            .filter(|t| t.deployment != deployment && t.is_live(ctx.now))
            .collect();
        old.sort_by_key(|t| t.launched_at);
        for (i, task) in old.into_iter().enumerate() {
            let at = ready.get(i).or(ready.last()).copied().unwrap_or(ctx.now);
            task.stop(ctx, at.max(ctx.now));
        }
    }

    fn drain(&mut self, ctx: &Ctx) {
        self.stamp_completion(ctx.now);
        self.deleted_at = Some(ctx.now);
        self.desired = 0;
        for task in &mut self.tasks {
            task.stop(ctx, ctx.now);
        }
    }

    /// Stops up to `n` RUNNING tasks now; the scheduler replaces them at once.
    fn kill(&mut self, ctx: &Ctx, n: u32) {
        self.stamp_completion(ctx.now);
        let mut victims = 0;
        for task in &mut self.tasks {
            if victims == n {
                break;
            }
            if task.phase(ctx.now) == Phase::Running {
                task.stop(ctx, ctx.now);
                victims += 1;
            }
        }
        self.converge(ctx);
    }

    /// Drops tasks that are gone, so a long-lived service's record stays small; returns
    /// the timelines of those that ran, for the logs.
    fn prune(&mut self, t: Millis) -> Vec<PastTask> {
        let (gone, kept): (Vec<TaskRec>, Vec<TaskRec>) = std::mem::take(&mut self.tasks)
            .into_iter()
            .partition(|task| task.is_gone(t));
        self.tasks = kept;
        gone.iter().filter_map(TaskRec::past).collect()
    }

    /// Whether the service runs with exactly this configuration already.
    fn matches(&self, update: &ServiceUpdate<'_>) -> bool {
        self.desired == update.desired_count && self.runs(update)
    }

    /// Whether the primary deployment's task definition is `update`'s (count aside).
    fn runs(&self, update: &ServiceUpdate<'_>) -> bool {
        self.image == update.image
            && self.access_point_id == update.access_point_id
            && self.db_endpoint == update.db_endpoint
    }

    pub fn observed(&self, t: Millis) -> ObservedService {
        ObservedService {
            name: self.name.clone(),
            arn: self.arn(),
            state: if self.is_draining() {
                ServiceState::Draining
            } else {
                ServiceState::Active
            },
            desired_count: self.desired,
            running_count: self.running(t),
            pending_count: self.pending(t),
            image: self.image.clone(),
            access_point_id: self.access_point_id.clone(),
            db_endpoint: self.db_endpoint.clone(),
            rollout: self.rollout(t),
            deployment: Some(self.deployment_id()),
        }
    }

    pub fn view(&self, t: Millis) -> ServiceView {
        let mut tasks: Vec<TaskView> = self.tasks_at(t).map(|task| task.view(t)).collect();
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        ServiceView {
            name: self.name.clone(),
            tenant_id: self.key.tenant_id.to_string(),
            instance_id: self.key.instance_id.to_string(),
            status: if self.is_draining() {
                "DRAINING"
            } else {
                "ACTIVE"
            }
            .to_owned(),
            desired_count: self.desired,
            running_count: self.running(t),
            pending_count: self.pending(t),
            image: self.image.clone(),
            access_point_id: self.access_point_id.clone(),
            db_endpoint: self.db_endpoint.clone(),
            tasks,
        }
    }
}

impl Inventory {
    /// The service `name` unless it is gone at `t`.
    pub(super) fn live_service(&self, name: &str, t: Millis) -> Option<&ServiceRec> {
        self.services.get(name).filter(|s| !s.is_gone(t))
    }

    /// Runs `f` on the live service `name` (pruned of gone tasks) and marks it dirty.
    pub(super) fn with_service<T>(
        &mut self,
        name: &str,
        t: Millis,
        f: impl FnOnce(&mut ServiceRec) -> T,
    ) -> Option<T> {
        let svc = self.services.get_mut(name).filter(|s| !s.is_gone(t))?;
        let past = svc.prune(t);
        let key = svc.key.clone();
        let out = f(svc);
        self.touch(RecordKey::Service(name.to_owned()));
        self.remember_tasks(name, &key, past);
        Some(out)
    }

    /// Adds stopped tasks to the history of service name `name`, keeping the newest.
    pub(super) fn remember_tasks(&mut self, name: &str, key: &InstanceKey, past: Vec<PastTask>) {
        if past.is_empty() {
            return;
        }
        let history = self
            .task_history
            .entry(name.to_owned())
            .or_insert_with(|| TaskHistory {
                service: name.to_owned(),
                key: key.clone(),
                tasks: Vec::new(),
            });
        history.key = key.clone();
        history.tasks.extend(past);
        history
            .tasks
            .sort_by(|a, b| (a.stop_at, &a.id).cmp(&(b.stop_at, &b.id)));
        history.tasks.dedup_by(|a, b| a.id == b.id);
        let excess = history.tasks.len().saturating_sub(MAX_PAST_TASKS);
        history.tasks.drain(..excess);
        self.touch(RecordKey::TaskHistory(name.to_owned()));
    }

    /// Forgets the stopped tasks of service name `name` (its log group was deleted).
    pub(super) fn forget_tasks(&mut self, name: &str) {
        if self.task_history.remove(name).is_some() {
            self.touch(RecordKey::TaskHistory(name.to_owned()));
        }
    }

    /// Every task of service name `name` that may have written log lines: the service's
    /// tasks (in any state, gone ones included until pruned) and its remembered history.
    pub(super) fn log_sources(&self, name: &str) -> Vec<Source> {
        let current = self
            .services
            .get(name)
            .into_iter()
            .flat_map(|svc| svc.tasks.iter())
            .map(TaskRec::log_source);
        let past = self
            .task_history
            .get(name)
            .into_iter()
            .flat_map(|h| h.tasks.iter())
            .map(|p| Source::new(&p.id, &p.image, p.running_at, Some(p.stop_at)));
        current.chain(past).collect()
    }

    pub(super) fn create_service(
        &mut self,
        ctx: &Ctx,
        api: Api,
        key: &InstanceKey,
        new: NewService<'_>,
    ) -> CloudResult<()> {
        check_count(api, new.desired_count)?;
        if let Some(existing) = self.live_service(new.name, ctx.now) {
            return if existing.is_draining() {
                Err(api.invalid(format!(
                    "service {} is still draining; create it again once it is inactive",
                    new.name
                )))
            } else if existing.client_token == new.token {
                Ok(())
            } else {
                Err(api.permanent(
                    "InvalidParameterException",
                    "Creation of service was not idempotent.",
                ))
            };
        }
        // A gone service not swept yet: its tasks' timelines go to the history first.
        if let Some(old) = self.services.remove(new.name) {
            let past = old.tasks.iter().filter_map(TaskRec::past).collect();
            self.remember_tasks(new.name, &old.key, past);
        }
        let svc = ServiceRec::new(ctx, key, &new);
        self.services.insert(new.name.to_owned(), svc);
        self.touch(RecordKey::Service(new.name.to_owned()));
        Ok(())
    }

    pub(super) fn update_service(
        &mut self,
        ctx: &Ctx,
        api: Api,
        update: &ServiceUpdate<'_>,
    ) -> CloudResult<()> {
        check_count(api, update.desired_count)?;
        let name = update.name;
        let current_ap = match self.live_service(name, ctx.now) {
            None => return Err(api.invalid(format!("ServiceNotFoundException: {name}"))),
            Some(s) if s.is_draining() => {
                return Err(api.invalid(format!("ServiceNotActiveException: {name}")));
            }
            Some(s) if s.matches(update) => return Ok(()),
            Some(s) => s.access_point_id.clone(),
        };
        // Switching to another access point registers a task definition that mounts it; the
        // sim refuses one that does not exist (or is being deleted), which on AWS would
        // only show as tasks failing to start.
        if current_ap != update.access_point_id {
            let usable = self
                .live_access_point(update.access_point_id, ctx.now)
                .and_then(|ap| ap.state(ctx.now))
                .is_some_and(|s| {
                    matches!(s, AccessPointState::Creating | AccessPointState::Available)
                });
            if !usable {
                return Err(api.invalid(format!(
                    "AccessPointNotFound: access point {} does not exist",
                    update.access_point_id
                )));
            }
        }
        self.with_service(name, ctx.now, |svc| {
            if svc.runs(update) {
                svc.scale(ctx, update.desired_count);
            } else {
                svc.roll(ctx, update);
            }
        });
        Ok(())
    }

    pub(super) fn delete_service(&mut self, ctx: &Ctx, name: &str) -> CloudResult<()> {
        let draining = self
            .live_service(name, ctx.now)
            .is_none_or(ServiceRec::is_draining);
        if !draining {
            self.with_service(name, ctx.now, |svc| svc.drain(ctx));
        }
        Ok(())
    }

    /// Drift: someone changed the desired count outside the controller.
    pub(super) fn drift_desired_count(&mut self, ctx: &Ctx, name: &str, n: u32) -> Option<()> {
        let active = self
            .live_service(name, ctx.now)
            .is_some_and(|s| !s.is_draining());
        if !active {
            return None;
        }
        self.with_service(name, ctx.now, |svc| svc.scale(ctx, n))
    }

    /// Drift: tasks died (OOM, host failure); ECS replaces them.
    pub(super) fn drift_kill_tasks(&mut self, ctx: &Ctx, name: &str, n: u32) -> Option<()> {
        self.with_service(name, ctx.now, |svc| svc.kill(ctx, n))
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    fn ctx(now: Millis) -> Ctx {
        Ctx::new(now, 1.0, 1.0)
    }

    fn service(desired: u32) -> ServiceRec {
        let new = NewService {
            name: "svc",
            desired_count: desired,
            image: "img0",
            access_point_id: "fsap-1",
            db_endpoint: "db",
            token: "tok",
        };
        ServiceRec::new(&ctx(0), &InstanceKey::from_strs("t", "i"), &new)
    }

    fn update(image: &str, desired: u32) -> ServiceUpdate<'_> {
        ServiceUpdate {
            name: "svc",
            desired_count: desired,
            image,
            access_point_id: "fsap-1",
            db_endpoint: "db",
        }
    }

    /// Tasks of older deployments are always on their way out.
    fn check_invariants(svc: &ServiceRec, t: Millis) {
        for task in &svc.tasks {
            if task.deployment != svc.deployment {
                assert!(task.stop_at.is_some(), "old task without a stop: {task:?}");
            }
            assert_eq!(task.stop_at.is_some(), task.gone_at.is_some());
        }
        let live = svc.tasks_at(t).count() as u32;
        assert!(svc.running(t) + svc.pending(t) <= live);
    }

    /// Random updates, rollouts and kills at random times (no sleeping: the clock is a
    /// parameter); afterwards the service always settles on what was last asked for.
    #[test]
    fn random_histories_settle_on_the_last_request() {
        let mut rng = rand::rng();
        for _ in 0..300 {
            let mut svc = service(rng.random_range(0..4));
            let mut now = 0;
            let mut images = 0;
            for _ in 0..12 {
                now += rng.random_range(0..40_000);
                let c = ctx(now);
                match rng.random_range(0..4) {
                    0 => {
                        svc.prune(now);
                        svc.scale(&c, rng.random_range(0..5));
                    }
                    1 => {
                        svc.prune(now);
                        images += 1;
                        let image = format!("img{images}");
                        svc.roll(&c, &update(&image, rng.random_range(0..5)));
                    }
                    2 => svc.kill(&c, rng.random_range(0..3)),
                    _ => {}
                }
                check_invariants(&svc, now);
            }
            let later = now + 3_600_000;
            let seen = svc.observed(later);
            assert_eq!(seen.running_count, svc.desired, "{svc:#?}");
            assert_eq!(seen.pending_count, 0);
            assert_eq!(seen.rollout, Rollout::Completed);
            assert!(svc.tasks_at(later).all(|t| t.image == svc.image));
        }
    }

    #[test]
    fn old_tasks_stop_when_their_replacements_run() {
        let mut svc = service(2);
        let settled = 60_000;
        assert_eq!(svc.running(settled), 2);
        svc.roll(&ctx(settled), &update("img1", 2));
        let first_ready = svc
            .tasks
            .iter()
            .filter(|t| t.deployment == 2)
            .map(|t| t.running_at)
            .min()
            .expect("new tasks");
        // Just before the first replacement runs, the old tasks still serve.
        assert_eq!(svc.running(first_ready - 1), 2);
        assert_eq!(svc.rollout(first_ready - 1), Rollout::InProgress);
        assert_eq!(svc.running(first_ready), 2, "one old stops as one new runs");
    }

    /// As ECS with a container health check: a deployment completes once its tasks are
    /// healthy (running is not enough), and a later change of count neither starts a new
    /// deployment nor takes the COMPLETED back; a new task definition does both.
    #[test]
    fn a_rollout_completes_on_healthy_tasks_and_stays_completed_through_scaling() {
        let mut svc = service(2);
        let running = svc.tasks.iter().map(|t| t.running_at).max().expect("tasks");
        let healthy = svc.tasks.iter().map(|t| t.healthy_at).max().expect("tasks");
        assert_eq!(svc.observed(running).running_count, 2);
        assert_eq!(
            svc.rollout(running),
            Rollout::InProgress,
            "running, not healthy yet"
        );
        assert_eq!(svc.rollout(healthy), Rollout::Completed);
        let first = svc.observed(healthy).deployment.expect("an id");
        svc.scale(&ctx(healthy), 3);
        let seen = svc.observed(healthy);
        assert_eq!((seen.running_count, seen.pending_count), (2, 1));
        assert_eq!(
            seen.rollout,
            Rollout::Completed,
            "scaling keeps the deployment"
        );
        assert_eq!(seen.deployment.as_deref(), Some(first.as_str()));
        svc.roll(&ctx(healthy), &update("img1", 3));
        let rolled = svc.observed(healthy);
        assert_eq!(rolled.rollout, Rollout::InProgress);
        assert_ne!(
            rolled.deployment,
            Some(first),
            "a new task definition, a new deployment"
        );
    }

    #[test]
    fn a_drained_service_is_gone_when_its_last_task_is() {
        let mut svc = service(3);
        svc.drain(&ctx(10_000));
        assert!(!svc.is_gone(10_000));
        assert_eq!(svc.running(10_000), 0);
        let last = svc
            .tasks
            .iter()
            .filter_map(|t| t.gone_at)
            .max()
            .expect("stops");
        assert!(!svc.is_gone(last - 1));
        assert!(svc.is_gone(last));
        assert_eq!(svc.observed(10_000).state, ServiceState::Draining);
    }

    #[test]
    fn task_statuses_follow_their_times() {
        let svc = service(1);
        let task = &svc.tasks[0];
        assert_eq!(task.last_status(0), "PROVISIONING");
        assert_eq!(task.last_status(task.pending_at), "PENDING");
        assert_eq!(task.last_status(task.running_at), "RUNNING");
        assert_eq!(task.health(task.running_at), "UNKNOWN");
        assert_eq!(task.health(task.healthy_at), "HEALTHY");
        let mut stopped = task.clone();
        stopped.stop(&ctx(task.healthy_at), task.healthy_at);
        assert_eq!(stopped.last_status(task.healthy_at), "DEACTIVATING");
        let gone = stopped.gone_at.expect("gone");
        assert_eq!(stopped.last_status(gone - 1), "STOPPING");
        assert!(stopped.is_gone(gone));
        assert_eq!(stopped.health(gone + 1), "HEALTHY", "frozen at the stop");
    }

    #[test]
    fn pruning_keeps_the_timelines_of_tasks_that_ran() {
        let mut svc = service(2);
        let ran = svc.tasks[0].healthy_at;
        svc.tasks[0].stop(&ctx(ran), ran);
        // The second never ran: stopped while provisioning.
        svc.tasks[1].stop(&ctx(0), 0);
        let past = svc.prune(3_600_000);
        assert_eq!(past.len(), 1);
        assert_eq!(past[0].stop_at, ran);
        assert!(svc.tasks.is_empty());
    }
}
