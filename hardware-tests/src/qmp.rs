//! A minimal QMP client (QEMU Machine Protocol): JSON lines over the VM's unix socket.
//! Used by the virtual BMC to power a lab VM and change its boot order.
//!
//! One command at a time (a mutex), asynchronous events are skipped. It only talks to the
//! socket it is given.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// How long one QMP command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be used.
    #[error("QMP socket {path}: {source}")]
    Io {
        /// The socket.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// QEMU answered an error.
    #[error("QMP {command}: {class}: {desc}")]
    Command {
        /// The command sent.
        command: String,
        /// QEMU's error class.
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// QEMU said something that is not QMP, or nothing in time.
    #[error("QMP socket {path}: {detail}")]
    Protocol {
        /// The socket.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

#[derive(Debug)]
struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// A QMP connection in command mode.
#[derive(Debug)]
pub struct Qmp {
    path: String,
    conn: tokio::sync::Mutex<Conn>,
}

impl Qmp {
    /// Connects, reads the greeting and enters command mode (`qmp_capabilities`).
    pub async fn connect(path: &Path) -> Result<Qmp, QmpError> {
        let name = path.display().to_string();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Io {
                path: name.clone(),
                source,
            })?;
        let (read, writer) = stream.into_split();
        let qmp = Qmp {
            path: name,
            conn: tokio::sync::Mutex::new(Conn {
                reader: BufReader::new(read),
                writer,
            }),
        };
        {
            let mut conn = qmp.conn.lock().await;
            let greeting = qmp.read_message(&mut conn).await?;
            if greeting.get("QMP").is_none() {
                return Err(qmp.protocol(format!("expected the QMP greeting, got {greeting}")));
            }
        }
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    fn protocol(&self, detail: String) -> QmpError {
        QmpError::Protocol {
            path: self.path.clone(),
            detail,
        }
    }

    async fn read_message(&self, conn: &mut Conn) -> Result<Value, QmpError> {
        let mut line = String::new();
        let read = tokio::time::timeout(COMMAND_TIMEOUT, conn.reader.read_line(&mut line))
            .await
            .map_err(|_| self.protocol("no answer within 10 s".to_owned()))?
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        if read == 0 {
            return Err(self.protocol("QEMU closed the socket".to_owned()));
        }
        serde_json::from_str(&line).map_err(|e| self.protocol(format!("not JSON ({e}): {line}")))
    }

    /// Runs one command and returns its `return` value.
    pub async fn execute(&self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let mut conn = self.conn.lock().await;
        let mut request = json!({ "execute": command });
        if arguments.as_object().is_some_and(|a| !a.is_empty()) {
            request["arguments"] = arguments;
        }
        let mut bytes = request.to_string().into_bytes();
        bytes.push(b'\n');
        conn.writer
            .write_all(&bytes)
            .await
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        loop {
            let message = self.read_message(&mut conn).await?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    class: error["class"].as_str().unwrap_or("?").to_owned(),
                    desc: error["desc"].as_str().unwrap_or("?").to_owned(),
                });
            }
            // An asynchronous event (RESET, STOP, ...): not our answer.
        }
    }

    /// A device's `bootindex` (-1: not bootable).
    pub async fn bootindex(&self, device: &str) -> Result<i64, QmpError> {
        let value = self
            .execute(
                "qom-get",
                json!({"path": format!("/machine/peripheral/{device}"), "property": "bootindex"}),
            )
            .await?;
        Ok(value.as_i64().unwrap_or(-1))
    }

    async fn set_bootindex(&self, device: &str, index: i64) -> Result<(), QmpError> {
        self.execute(
            "qom-set",
            json!({"path": format!("/machine/peripheral/{device}"), "property": "bootindex", "value": index}),
        )
        .await
        .map(drop)
    }

    /// Sets the `bootindex` of each (device, index). QEMU refuses an index another device
    /// holds (even the device itself), so the devices that change are cleared (-1) first.
    pub async fn set_boot_order(&self, order: &[(String, i64)]) -> Result<(), QmpError> {
        let mut changing = vec![];
        for (device, index) in order {
            if self.bootindex(device).await? != *index {
                changing.push((device, *index));
            }
        }
        for (device, _) in &changing {
            self.set_bootindex(device, -1).await?;
        }
        for (device, index) in &changing {
            self.set_bootindex(device, *index).await?;
        }
        Ok(())
    }

    /// Powers on: `cont`, after a `system_reset` unless the VM never ran (`prelaunch`), so
    /// a VM that was off boots afresh. Nothing when already running.
    pub async fn power_on(&self) -> Result<(), QmpError> {
        let (running, status) = self.status().await?;
        if running {
            return Ok(());
        }
        if status != "prelaunch" {
            self.execute("system_reset", json!({})).await?;
        }
        self.execute("cont", json!({})).await.map(drop)
    }

    /// Powers off: the VM stops (vCPUs halted); nothing when not running.
    pub async fn power_off(&self) -> Result<(), QmpError> {
        if self.status().await?.0 {
            self.execute("stop", json!({})).await?;
        }
        Ok(())
    }

    /// `query-status`: (`running`, QEMU's status string).
    pub async fn status(&self) -> Result<(bool, String), QmpError> {
        let status = self.execute("query-status", json!({})).await?;
        Ok((
            status["running"].as_bool().unwrap_or(false),
            status["status"].as_str().unwrap_or("unknown").to_owned(),
        ))
    }
}
