//! CloudWatch Logs: one log group per instance (`/wpfleet/{tenant}/{instance}`, tagged,
//! with the configured retention), and `FilterLogEvents` over it for the logs API.
//!
//! Observation: DescribeLogGroups with `logGroupIdentifiers` (up to 50 names per call;
//! outside a monitoring account AWS accepts plain names there), or the exact name as a
//! prefix for a single instance. Results are matched by exact name, so a server that
//! ignores the filter costs more pages but stays correct.
//!
//! Page tokens handed out are our own envelope around AWS's (`v1.` + base64url), so a
//! token that was not issued here is refused as `InvalidParameterException` before any
//! call, whatever the server would have made of it.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_cloudwatchlogs::types::LogGroup;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::AwsCloud;
use super::call::{Api, AwsResult};
use super::errors::AwsFailure;
use crate::cloud::names::tags;
use crate::cloud::{CloudError, LogEvent, LogPage, LogQuery, ObservedLogGroup, StepOutcome};
use crate::model::{InstanceKey, Timestamp};

const DESCRIBE_LOG_GROUPS: Api = Api::new("logs", "DescribeLogGroups");
const CREATE_LOG_GROUP: Api = Api::new("logs", "CreateLogGroup");
const PUT_RETENTION_POLICY: Api = Api::new("logs", "PutRetentionPolicy");
const DELETE_LOG_GROUP: Api = Api::new("logs", "DeleteLogGroup");
const FILTER_LOG_EVENTS: Api = Api::new("logs", "FilterLogEvents");

/// DescribeLogGroups takes at most this many identifiers.
pub const GROUPS_PER_CALL: usize = 50;
/// FilterLogEvents' bounds on `limit`.
const MAX_LOG_LIMIT: u32 = 10_000;
const TOKEN_PREFIX: &str = "v1.";

impl AwsCloud {
    /// The log groups called `names` that exist, by name.
    pub(super) async fn observe_log_groups(
        &self,
        names: &[String],
    ) -> AwsResult<HashMap<String, ObservedLogGroup>> {
        let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let mut found = HashMap::new();
        for chunk in names.chunks(GROUPS_PER_CALL) {
            for group in self.describe_log_groups(chunk).await? {
                let Some(name) = group.log_group_name() else {
                    continue;
                };
                if wanted.contains(name) {
                    let arn = group
                        .log_group_arn()
                        .or_else(|| group.arn().map(|a| a.trim_end_matches(":*")))
                        .unwrap_or_default();
                    found.insert(
                        name.to_owned(),
                        ObservedLogGroup {
                            name: name.to_owned(),
                            arn: arn.to_owned(),
                        },
                    );
                }
            }
        }
        Ok(found)
    }

    async fn describe_log_groups(&self, names: &[String]) -> AwsResult<Vec<LogGroup>> {
        let mut all = Vec::new();
        let mut next = None;
        loop {
            let request = self.clients.logs.describe_log_groups();
            let request = match names {
                [one] => request.log_group_name_prefix(one),
                many => request.set_log_group_identifiers(Some(many.to_vec())),
            };
            let out = self
                .caller
                .send(DESCRIBE_LOG_GROUPS, request.set_next_token(next).send())
                .await?;
            all.extend(out.log_groups.unwrap_or_default());
            next = out.next_token;
            if next.is_none() {
                return Ok(all);
            }
        }
    }

    /// CreateLogGroup (existing is fine), then the retention: `--aws-log-retention-days`,
    /// which is this deployment's choice and wins over the planner's default.
    pub(super) async fn create_log_group(
        &self,
        key: &InstanceKey,
        name: &str,
    ) -> AwsResult<StepOutcome> {
        let request = self
            .clients
            .logs
            .create_log_group()
            .log_group_name(name)
            .set_tags(Some(tags(key).into_iter().collect()))
            .send();
        match self.caller.send(CREATE_LOG_GROUP, request).await {
            Ok(_) => {}
            Err(f) if f.is(&["ResourceAlreadyExistsException"]) => {}
            Err(f) => return Err(f),
        }
        let retention = i32::try_from(self.settings.log_retention_days).unwrap_or(30);
        let request = self
            .clients
            .logs
            .put_retention_policy()
            .log_group_name(name)
            .retention_in_days(retention)
            .send();
        self.caller.send(PUT_RETENTION_POLICY, request).await?;
        Ok(StepOutcome::Done)
    }

    /// DeleteLogGroup; one that is already gone is fine.
    pub(super) async fn delete_log_group(&self, name: &str) -> AwsResult<StepOutcome> {
        let request = self
            .clients
            .logs
            .delete_log_group()
            .log_group_name(name)
            .send();
        match self.caller.send(DELETE_LOG_GROUP, request).await {
            Ok(_) => Ok(StepOutcome::Done),
            Err(f) if f.is(&["ResourceNotFoundException"]) => Ok(StepOutcome::Done),
            Err(f) => Err(f),
        }
    }

    /// One page of FilterLogEvents over the group `name`.
    pub(super) async fn filter_log_events(
        &self,
        name: &str,
        query: &LogQuery,
    ) -> AwsResult<LogPage> {
        if query.limit == 0 || query.limit > MAX_LOG_LIMIT {
            return Err(invalid(format!(
                "limit must be between 1 and {MAX_LOG_LIMIT}"
            )));
        }
        let aws_token = match &query.next_token {
            None => None,
            Some(t) => {
                Some(open_token(t).ok_or_else(|| invalid("The nextToken is invalid.".into()))?)
            }
        };
        let request = self
            .clients
            .logs
            .filter_log_events()
            .log_group_name(name)
            .start_time(query.start.timestamp_millis())
            .end_time(query.end.timestamp_millis())
            .limit(i32::try_from(query.limit).unwrap_or(i32::MAX))
            .set_next_token(aws_token)
            .send();
        let out = self.caller.send(FILTER_LOG_EVENTS, request).await?;
        let events = out
            .events()
            .iter()
            .map(|e| LogEvent {
                timestamp: e
                    .timestamp()
                    .and_then(Timestamp::from_timestamp_millis)
                    .unwrap_or_default(),
                message: e.message().unwrap_or_default().to_owned(),
                log_stream: e.log_stream_name().unwrap_or_default().to_owned(),
            })
            .collect();
        Ok(LogPage {
            events,
            next_token: out.next_token().map(seal_token),
        })
    }
}

fn invalid(message: String) -> AwsFailure {
    AwsFailure {
        code: Some("InvalidParameterException".into()),
        error: CloudError::Permanent {
            service: FILTER_LOG_EVENTS.service,
            operation: FILTER_LOG_EVENTS.operation,
            code: "InvalidParameterException".into(),
            message,
        },
    }
}

fn seal_token(aws: &str) -> String {
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(aws))
}

fn open_token(ours: &str) -> Option<String> {
    let body = ours.strip_prefix(TOKEN_PREFIX)?;
    let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_foreign_ones_are_refused() {
        let aws = "/wpfleet/t/i@wordpress/wordpress/abc@17";
        assert_eq!(open_token(&seal_token(aws)).as_deref(), Some(aws));
        for foreign in ["not a token", "v1.", "v1.!!!", aws, "v2.YWJj"] {
            assert_eq!(open_token(foreign), None, "{foreign}");
        }
    }
}
