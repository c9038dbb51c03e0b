//! `spool.v1.Metrics`: reads of the metrics history over gRPC. The work is
//! [`History::query`], which the admin listener's `/api/v1/history`
//! calls too; this module only converts messages and errors.

use std::sync::Arc;

use spool_proto::v1::{self, metrics_server::Metrics};
use tonic::{Request, Response, Status};

use spool_auth::Action;

use crate::access::{Access, caller};
use crate::history::{History, HistoryAnswer, HistoryError, HistoryRequest};
use crate::status::{join_error, status};

#[derive(Debug, Clone)]
pub struct MetricsService {
    /// `None` when the server keeps no history.
    history: Option<Arc<History>>,
    access: Arc<Access>,
}

impl MetricsService {
    pub fn new(history: Option<Arc<History>>) -> Self {
        MetricsService {
            history,
            access: Arc::new(Access::open()),
        }
    }

    /// Reads need `cluster=admin` under `access`: the history holds every
    /// topic's and queue's figures.
    pub fn with_access(mut self, access: Arc<Access>) -> Self {
        self.access = access;
        self
    }
}

/// Runs a history read on the blocking pool (it reads segments).
pub async fn read_history(
    history: Option<Arc<History>>,
    request: HistoryRequest,
) -> Result<HistoryAnswer, Status> {
    let Some(history) = history else {
        return Err(Status::failed_precondition(
            "this server keeps no metrics history (metrics_history_interval_ms = 0)",
        ));
    };
    tokio::task::spawn_blocking(move || history.query(&request))
        .await
        .map_err(join_error)?
        .map_err(history_status)
}

/// A refused read is the caller's mistake; a storage fault is ours.
pub fn history_status(error: HistoryError) -> Status {
    match error {
        HistoryError::Expression(_) | HistoryError::Invalid(_) => Status::invalid_argument(error.to_string()),
        HistoryError::Storage(error) => status(error),
    }
}

#[tonic::async_trait]
impl Metrics for MetricsService {
    async fn get_metrics_history(
        &self,
        request: Request<v1::GetMetricsHistoryRequest>,
    ) -> Result<Response<v1::GetMetricsHistoryResponse>, Status> {
        self.access.check(caller(&request), Action::CLUSTER_ADMIN, "")?;
        let request = request.into_inner();
        let request = HistoryRequest {
            series: request.series,
            from_time_ms: request.from_time_ms,
            to_time_ms: request.to_time_ms,
            step_ms: request.step_ms,
        };
        let answer = read_history(self.history.clone(), request).await?;
        Ok(Response::new(to_proto(answer)))
    }
}

fn to_proto(answer: HistoryAnswer) -> v1::GetMetricsHistoryResponse {
    v1::GetMetricsHistoryResponse {
        results: answer
            .results
            .into_iter()
            .map(|result| v1::SeriesResult {
                expression: result.expression,
                series: result
                    .series
                    .into_iter()
                    .map(|(labels, points)| v1::SeriesPoints {
                        labels: labels
                            .into_iter()
                            .map(|(name, value)| v1::Label { name, value })
                            .collect(),
                        points: points
                            .into_iter()
                            .map(|(time_ms, value)| v1::Point { time_ms, value })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
        step_ms: answer.step_ms,
        interval_ms: answer.interval_ms,
        oldest_sample_time_ms: answer.oldest_sample_time_ms,
        from_time_ms: answer.from_time_ms,
        to_time_ms: answer.to_time_ms,
    }
}
