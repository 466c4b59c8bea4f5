//! The one home of aws-sdk-sqs: the queue `follow` reads S3's event
//! notifications from, behind the `EventQueue` trait.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::Region;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;

use crate::follow::{EventQueue, QueueError, Received};
use crate::store::BoxFuture;

/// How to reach the queue.
#[derive(Clone, Debug)]
pub struct SqsOptions {
    pub region: Option<String>,
    pub max_attempts: u32,
}

/// One SQS queue, by its URL.
pub struct SqsQueue {
    client: Client,
    url: String,
}

impl SqsQueue {
    /// Builds the client from the standard AWS configuration. Requests go to the
    /// queue URL's own host (`AWS_ENDPOINT_URL_SQS` overrides it), so a queue on
    /// an SQS-compatible server needs nothing more than its URL.
    pub async fn connect(url: &str, options: &SqsOptions) -> SqsQueue {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(options.max_attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    // A long poll waits up to 20 s before it answers.
                    .read_timeout(Duration::from_secs(40))
                    .build(),
            );
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_sqs::config::Builder::from(&shared);
        let endpoint = std::env::var("AWS_ENDPOINT_URL_SQS")
            .ok()
            .filter(|e| !e.trim().is_empty())
            .or_else(|| origin(url));
        config.set_endpoint_url(endpoint);
        if shared.region().is_none() {
            config =
                config.region(region_of(url).map_or(Region::from_static("us-east-1"), Region::new));
        }
        SqsQueue {
            client: Client::from_conf(config.build()),
            url: url.to_string(),
        }
    }

    fn error<E>(&self, action: &'static str, err: SdkError<E>) -> QueueError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let url = self.url.clone();
        if let SdkError::ServiceError(service) = &err {
            let code = service.err().code().unwrap_or("").to_string();
            let message = service.err().message().unwrap_or("").to_string();
            return match code.as_str() {
                "AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist" => {
                    QueueError::NoSuchQueue(url)
                }
                "AccessDenied" | "AccessDeniedException" => QueueError::Denied { action, url },
                _ => QueueError::Failed {
                    action,
                    url,
                    detail: format!("{code}: {message}"),
                },
            };
        }
        let detail = DisplayErrorContext(&err).to_string();
        match err {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                QueueError::Unreachable { url, detail }
            }
            _ => QueueError::Failed {
                action,
                url,
                detail,
            },
        }
    }
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

/// The region in an AWS queue URL (`https://sqs.REGION.amazonaws.com/...`).
fn region_of(url: &str) -> Option<String> {
    let host = origin(url)?.split_once("://")?.1.to_string();
    let mut parts = host.split('.');
    (parts.next() == Some("sqs"))
        .then(|| parts.next().map(str::to_string))
        .flatten()
        .filter(|r| r.contains('-'))
}

impl EventQueue for SqsQueue {
    fn url(&self) -> &str {
        &self.url
    }

    fn receive(
        &self,
        max: i32,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<Received>, QueueError>> {
        Box::pin(async move {
            let out = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(max.clamp(1, 10))
                .wait_time_seconds(wait.as_secs().min(20) as i32)
                .send()
                .await
                .map_err(|e| self.error("ReceiveMessage", e))?;
            Ok(out
                .messages()
                .iter()
                .filter_map(|m| {
                    Some(Received {
                        receipt: m.receipt_handle()?.to_string(),
                        body: m.body().unwrap_or("").to_string(),
                    })
                })
                .collect())
        })
    }

    fn delete(&self, receipts: Vec<String>) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            for chunk in receipts.chunks(10) {
                let entries = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(r)
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| QueueError::Failed {
                        action: "DeleteMessageBatch",
                        url: self.url.clone(),
                        detail: e.to_string(),
                    })?;
                let out = self
                    .client
                    .delete_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| self.error("DeleteMessageBatch", e))?;
                if let Some(failed) = out.failed().first() {
                    return Err(QueueError::Failed {
                        action: "DeleteMessageBatch",
                        url: self.url.clone(),
                        detail: format!("{}: {}", failed.code(), failed.message().unwrap_or("")),
                    });
                }
            }
            Ok(())
        })
    }

    fn release(&self, receipt: String) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            self.client
                .change_message_visibility()
                .queue_url(&self.url)
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.error("ChangeMessageVisibility", e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_and_region_come_from_the_queue_url() {
        assert_eq!(
            origin("http://127.0.0.1:5000/123456789012/q").as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(
            origin("https://sqs.eu-west-1.amazonaws.com/123456789012/q").as_deref(),
            Some("https://sqs.eu-west-1.amazonaws.com")
        );
        assert_eq!(origin("not a url"), None);
        assert_eq!(
            region_of("https://sqs.eu-west-1.amazonaws.com/1/q").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of("http://127.0.0.1:5000/1/q"), None);
    }
}
