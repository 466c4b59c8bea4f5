//! An SQS queue on the same moto server, and a bucket's event notifications into it.

use std::time::Duration;

use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;

use super::{ACCESS_KEY, Bucket, REGION, SECRET_KEY, endpoint, unique_bucket};

/// A queue on moto that a bucket's events go to.
pub struct Queue {
    pub url: String,
    client: aws_sdk_sqs::Client,
    rt: tokio::runtime::Runtime,
}

fn client() -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(REGION))
        .endpoint_url(endpoint())
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "tests",
        ))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

impl Queue {
    /// A new queue whose messages come back after `visibility` when not deleted.
    pub fn create(visibility: Duration) -> Queue {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async { client() });
        let name = unique_bucket("q");
        let out = rt
            .block_on(
                client
                    .create_queue()
                    .queue_name(&name)
                    .attributes(
                        QueueAttributeName::VisibilityTimeout,
                        visibility.as_secs().to_string(),
                    )
                    .send(),
            )
            .unwrap();
        Queue {
            url: out.queue_url().unwrap().to_string(),
            client,
            rt,
        }
    }

    /// A queue by URL, which may not exist.
    pub fn at(url: &str) -> Queue {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async { client() });
        Queue {
            url: url.to_string(),
            client,
            rt,
        }
    }

    pub fn arn(&self) -> String {
        let out = self
            .rt
            .block_on(
                self.client
                    .get_queue_attributes()
                    .queue_url(&self.url)
                    .attribute_names(QueueAttributeName::QueueArn)
                    .send(),
            )
            .unwrap();
        out.attributes().unwrap()[&QueueAttributeName::QueueArn].clone()
    }

    /// Sends a raw message body.
    pub fn send(&self, body: &str) {
        self.rt
            .block_on(
                self.client
                    .send_message()
                    .queue_url(&self.url)
                    .message_body(body)
                    .send(),
            )
            .unwrap();
    }

    /// Messages visible or in flight.
    pub fn depth(&self) -> u64 {
        let out = self
            .rt
            .block_on(
                self.client
                    .get_queue_attributes()
                    .queue_url(&self.url)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                    .send(),
            )
            .unwrap();
        out.attributes()
            .unwrap()
            .values()
            .map(|v| v.parse::<u64>().unwrap())
            .sum()
    }
}

impl Bucket {
    /// Sends the bucket's created and removed events to `queue` (S3 sends an
    /// `s3:TestEvent` first).
    pub fn notify(&self, queue: &Queue) {
        let config = NotificationConfiguration::builder()
            .queue_configurations(
                QueueConfiguration::builder()
                    .queue_arn(queue.arn())
                    .events(Event::from("s3:ObjectCreated:*"))
                    .events(Event::from("s3:ObjectRemoved:*"))
                    .build()
                    .unwrap(),
            )
            .build();
        self.rt
            .block_on(
                self.client
                    .put_bucket_notification_configuration()
                    .bucket(&self.name)
                    .notification_configuration(config)
                    .send(),
            )
            .unwrap();
    }
}
