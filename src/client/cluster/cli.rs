//! client::cluster::cli: the `bramble cluster …` commands (clap), kept beside what they print so
//! main.rs only routes to them.

use anyhow::Context;
use clap::Subcommand;

use crate::client::{Bootstrap, Client, cluster};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Nodes (address, rack, voter/learner/broker, controller, fenced), the quorum's term and
    /// commit index, and each quorum member's lag behind the leader.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// One line per partition: topic, partition, leader, replicas, ISR.
    Leaders {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
    /// Elect leaders (Kafka's ElectLeaders): preferred replicas back, or with --unclean any live
    /// replica where no in-sync one is left. Every partition unless --topic names one topic.
    ElectLeaders {
        #[arg(long)]
        topic: Option<String>,
        /// One partition of --topic.
        #[arg(long, requires = "topic")]
        partition: Option<i32>,
        /// Elect outside the ISR where no in-sync replica is live (records may be lost).
        #[arg(long)]
        unclean: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        bootstrap: Bootstrap,
    },
}

/// Runs one `bramble cluster` command against the broker it names.
pub async fn cluster(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status { json, bootstrap } => {
            let addr = &bootstrap.bootstrap_server;
            let status = async {
                let mut client = Client::connect(addr).await?;
                cluster::cluster_status(&mut client).await
            }
            .await
            .with_context(|| format!("cluster status from broker {addr}"))?;
            match json {
                true => println!("{}", cluster::status_json(&status)),
                false => print!("{}", cluster::render_status(&status)),
            }
        }
        ClusterCommand::Leaders { json, bootstrap } => {
            let addr = &bootstrap.bootstrap_server;
            let rows = async {
                let mut client = Client::connect(addr).await?;
                cluster::partition_leaders(&mut client).await
            }
            .await
            .with_context(|| format!("partition leaders from broker {addr}"))?;
            match json {
                true => println!("{}", cluster::leaders_json(&rows)),
                false => print!("{}", cluster::render_leaders(&rows)),
            }
        }
        ClusterCommand::ElectLeaders {
            topic,
            partition,
            unclean,
            json,
            bootstrap,
        } => {
            let addr = &bootstrap.bootstrap_server;
            let rows = async {
                let mut client = Client::connect(addr).await?;
                cluster::elect::elect_leaders(&mut client, unclean, topic.as_deref(), partition)
                    .await
            }
            .await
            .with_context(|| format!("leader election through broker {addr}"))?;
            match json {
                true => println!("{}", cluster::elect::elections_json(&rows)),
                false => print!("{}", cluster::elect::render_elections(&rows)),
            }
        }
    }
    Ok(())
}
