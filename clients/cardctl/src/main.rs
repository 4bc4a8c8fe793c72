//! `cardctl`: cardd from the command line.
//!
//! Everything goes through the daemon's JSON-RPC API, with the same operators, roles and audit
//! as the web console: `cardctl login` keeps a session token in a file only the user can read,
//! later commands use it. Output is a short human summary, or the API's JSON with `--json` (for
//! scripts). Flows run interactively: the questions a flow asks (卡内余额…是否圈存？) are asked on
//! the terminal, or answered yes by `--yes`; the idempotency key is printed before the start is
//! sent, so an interrupted run can be re-sent with `--key` and never loads twice.

mod client;

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::{json, Map, Value};

use client::{Client, RpcError};

/// The daemon's default address.
const DEFAULT_URL: &str = "http://127.0.0.1:7420/";
/// Longest wait of one long poll, in milliseconds.
const POLL_WAIT_MS: u64 = 20_000;
/// Longest answer typed at a prompt, in bytes.
const ANSWER_BYTES_MAX: usize = 1_024;

#[derive(Debug, Parser)]
#[command(name = "cardctl", version, about = "cardd from the command line", long_about = None)]
struct Cli {
    /// cardd's JSON-RPC endpoint.
    #[arg(long, env = "CARDD_URL", default_value = DEFAULT_URL, global = true)]
    url: String,
    /// A session token (default: the one `cardctl login` saved).
    #[arg(long, env = "CARDD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a summary.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in and keep the session for later commands.
    Login {
        #[arg(short, long)]
        user: String,
        /// Read the password from standard input (for scripts) instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Log out and forget the saved session.
    Logout,
    /// Who the session belongs to.
    Whoami,
    /// Change your password (原密码, 新密码, 确认密码), read from the terminal or standard input.
    Passwd,
    /// Readers, their capabilities and whether a card is present.
    Readers,
    /// Read the card on a reader: type, number, plate, balance, counters, validity.
    Card { reader: String },
    /// Business flows.
    #[command(subcommand)]
    Flows(FlowsCommand),
    /// ETC recharge records (充值记录).
    #[command(subcommand)]
    Records(RecordsCommand),
    /// 充值: record a payment into a vehicle's account (a 未圈存 record).
    Recharge {
        #[arg(long)]
        plate: String,
        /// Plate colour code (0 蓝色, 1 黄色, 11 绿色, …).
        #[arg(long)]
        colour: u16,
        /// Amount in yuan, e.g. 200.00.
        #[arg(long)]
        amount: String,
        #[arg(long)]
        channel: Option<String>,
    },
    /// Operator administration (administrators).
    #[command(subcommand)]
    Operators(OperatorsCommand),
    /// City one-card group recharge (集团充值): queries, exports, quota top-ups, batches.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Groups (administrators): list, create or rename.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// What waits for an auditor: top-ups to approve, failed recharges to refund.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Any method, with its named parameters as a JSON object; `--out FILE` writes a file the
    /// answer carries (`data_base64`) or the JSON answer itself.
    Call {
        method: String,
        #[arg(default_value = "{}")]
        params: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Shell completions for bash, zsh, fish, elvish or powershell.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
enum FlowsCommand {
    /// The flows you may start, with their parameters.
    List,
    /// Start a flow and follow it, answering its questions on the terminal.
    Run {
        flow: String,
        /// The reader the flow works on.
        #[arg(long)]
        reader: Option<String>,
        /// A parameter as name=value (repeatable); amounts in yuan.
        #[arg(short = 'p', long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// The idempotency key: re-send an interrupted start with the key it printed.
        #[arg(long)]
        key: Option<String>,
        /// Answer every confirmation with yes (and every choice with the first option).
        #[arg(long)]
        yes: bool,
    },
    /// A run's state, result or failure.
    Get { run_id: String },
    /// Cancel a run.
    Cancel { run_id: String },
}

#[derive(Debug, Subcommand)]
enum RecordsCommand {
    /// A vehicle's records, newest first.
    Query {
        #[arg(long)]
        plate: String,
        #[arg(long)]
        colour: u16,
        /// From this day (YYYY-MM-DD), inclusive.
        #[arg(long)]
        from: Option<String>,
        /// To this day (YYYY-MM-DD), inclusive.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        page: Option<u32>,
        #[arg(long)]
        page_size: Option<u32>,
    },
    /// One record with its history.
    Get { record_id: String },
    /// What the card (on --reader) and the journal prove about a record's money.
    Evidence {
        record_id: String,
        #[arg(long)]
        reader: Option<String>,
    },
    /// 修改圈存状态: back to 未圈存, decided by the card on --reader (supervisors without it,
    /// with --reason).
    MarkNotLoaded {
        record_id: String,
        #[arg(long)]
        reader: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum OperatorsCommand {
    List,
    /// Create an operator; the password is read from the terminal or standard input.
    Create {
        username: String,
        #[arg(long)]
        display_name: String,
        /// teller, supervisor, group_operator, auditor, kiosk or admin.
        #[arg(long)]
        role: String,
        #[arg(long)]
        group: Option<String>,
    },
    Disable {
        username: String,
    },
    Enable {
        username: String,
    },
    /// Set a new password (read from the terminal or standard input).
    ResetPassword {
        username: String,
    },
}

/// A query period: a preset or dates.
#[derive(Debug, clap::Args)]
struct Period {
    /// last_7_days (最近7天), last_month (最近一个月), last_3_months, last_6_months.
    #[arg(long)]
    preset: Option<String>,
    /// From this day (YYYY-MM-DD).
    #[arg(long)]
    from: Option<String>,
    /// To this day (YYYY-MM-DD).
    #[arg(long)]
    to: Option<String>,
    /// Export exactly the rows queried to this file (.csv or .xlsx by its extension).
    #[arg(long)]
    export: Option<PathBuf>,
}

impl Period {
    fn params(&self) -> Value {
        json!({ "preset": self.preset, "start_date": self.from, "end_date": self.to })
    }
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// The group, its terminal number and available quota.
    Info,
    /// 充值查询: the group's card recharges with statistics (optionally exported).
    Orders(Period),
    /// 额度充值查询: the group's quota top-ups with statistics (optionally exported).
    Topups(Period),
    /// 额度充值: transfer a whole number of yuan through the payment gateway.
    Topup {
        #[arg(long)]
        amount: String,
        #[arg(long, default_value = "")]
        remark: String,
    },
    /// Create a batch from a CSV file of `card_number,amount` lines.
    BatchCreate { file: PathBuf },
    /// Recharge a batch card by card on a reader, with a progress bar.
    BatchRun {
        batch_id: String,
        #[arg(long)]
        reader: String,
        #[arg(long)]
        key: Option<String>,
    },
    /// A batch's per-card report.
    Batch { batch_id: String },
}

#[derive(Debug, Subcommand)]
enum GroupsCommand {
    List,
    /// Create a group (no quota) or change its name or terminal number.
    Upsert {
        group_id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        terminal: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Paid transfers to approve and failed recharges with their card evidence.
    Pending,
    /// Approve (or with --reject, reject) a paid transfer.
    Topup {
        topup_id: String,
        #[arg(long)]
        reject: bool,
        #[arg(long)]
        reason: String,
    },
    /// Return a failed order's quota (refused when the card shows the load landed).
    Refund {
        order_id: String,
        #[arg(long)]
        reason: String,
    },
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected name=value, got {text:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<RpcError>() {
                Some(rpc) => eprintln!("cardctl: {rpc}"),
                None => eprintln!("cardctl: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "cardctl",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let token = cli.token.clone().or_else(|| client::saved_token(&cli.url));
    let mut c = Client::new(&cli.url, token);
    let out = Output { json: cli.json };
    match cli.command {
        Command::Login {
            user,
            password_stdin,
        } => {
            let password = secret("密码: ", password_stdin)?;
            let r = c.call(
                "auth.login",
                json!({ "username": user, "password": password }),
            )?;
            let token = r["token"]
                .as_str()
                .context("no token in the login answer")?;
            let path = client::save_session(c.url(), token, &user)?;
            out.show(&r, |r| {
                format!(
                    "logged in as {} ({}); session kept in {}",
                    user,
                    r["session"]["role_label"].as_str().unwrap_or(""),
                    path.display()
                )
            })
        }
        Command::Logout => {
            let r = c.call("auth.logout", json!({}));
            client::forget_session();
            r.map(|_| println!("logged out"))
        }
        Command::Whoami => {
            let r = c.call("auth.whoami", json!({}))?;
            out.show(&r, |r| {
                format!(
                    "{} ({})",
                    r["username"].as_str().unwrap_or(""),
                    r["role"].as_str().unwrap_or("")
                )
            })
        }
        Command::Passwd => {
            let stdin = !std::io::stdin().is_terminal();
            let old = secret("原密码: ", stdin)?;
            let new = secret("新密码: ", stdin)?;
            let confirm = secret("确认密码: ", stdin)?;
            let r = c.call(
                "auth.change_password",
                json!({ "old_password": old, "new_password": new, "confirm_password": confirm }),
            )?;
            out.show(&r, |_| "密码已修改".into())
        }
        Command::Readers => {
            let r = c.call("readers.list", json!({}))?;
            out.table(&r, &["id", "name", "driver", "card_present"])
        }
        Command::Card { reader } => {
            let r = c.call("card.summary", json!({ "reader_id": reader }))?;
            out.fields(&r)
        }
        Command::Flows(f) => flows(&mut c, &out, f),
        Command::Records(r) => records(&mut c, &out, r),
        Command::Recharge {
            plate,
            colour,
            amount,
            channel,
        } => {
            let r = c.call(
                "etc.recharge",
                json!({ "plate": plate, "plate_colour": colour, "amount": amount, "channel": channel }),
            )?;
            out.fields(&r)
        }
        Command::Operators(o) => operators(&mut c, &out, o),
        Command::Group(g) => group(&mut c, &out, g),
        Command::Groups(GroupsCommand::List) => {
            let r = c.call("groups.list", json!({}))?;
            out.table(&r, &["group_id", "name", "terminal_no", "quota"])
        }
        Command::Groups(GroupsCommand::Upsert {
            group_id,
            name,
            terminal,
        }) => {
            let r = c.call(
                "groups.upsert",
                json!({ "group_id": group_id, "name": name, "terminal_no": terminal }),
            )?;
            out.fields(&r)
        }
        Command::Audit(a) => audit(&mut c, &out, a),
        Command::Call {
            method,
            params,
            out: file,
        } => {
            let params: Value =
                serde_json::from_str(&params).context("the parameters must be a JSON object")?;
            let r = c.call(&method, params)?;
            match file {
                Some(path) => write_file(&path, &r),
                None => out.print_json(&r),
            }
        }
        Command::Completions { .. } => Ok(()),
    }
}

fn flows(c: &mut Client, out: &Output, f: FlowsCommand) -> Result<()> {
    match f {
        FlowsCommand::List => {
            let r = c.call("flows.list", json!({}))?;
            out.table(&r, &["name", "title", "version", "description"])
        }
        FlowsCommand::Run {
            flow,
            reader,
            params,
            key,
            yes,
        } => {
            let params: Map<String, Value> =
                params.into_iter().map(|(k, v)| (k, typed(&v))).collect();
            let key = key.unwrap_or_else(new_key);
            eprintln!("idempotency key: {key} (re-send with --key {key} if interrupted)");
            let start = json!({ "flow": flow, "params": params, "idempotency_key": key, "reader_id": reader });
            let run = c.call("flows.start", start)?;
            let run_id = run["run_id"].as_str().context("no run id")?.to_owned();
            let done = follow(c, &run_id, yes)?;
            out.show(&done, describe_run)?;
            match (done["state"].as_str(), done["result"]["status"].as_str()) {
                (Some("succeeded"), Some("unknown")) => bail!(
                    "the outcome is unknown (结果待确认): put the card back on a reader so cardd settles it from the card; do not recharge again"
                ),
                (Some("succeeded"), _) => Ok(()),
                _ => bail!("the run did not succeed"),
            }
        }
        FlowsCommand::Get { run_id } => {
            let r = c.call("flows.get", json!({ "run_id": run_id }))?;
            out.show(&r, describe_run)
        }
        FlowsCommand::Cancel { run_id } => {
            let r = c.call("flows.cancel", json!({ "run_id": run_id }))?;
            out.show(&r, describe_run)
        }
    }
}

/// Follows a run to its end, answering its questions; progress goes to standard error.
fn follow(c: &mut Client, run_id: &str, yes: bool) -> Result<Value> {
    let spinner = indicatif::ProgressBar::new_spinner();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut since = 0u64;
    loop {
        let polled = c.call(
            "flows.events",
            json!({ "run_id": run_id, "since": since, "wait_ms": POLL_WAIT_MS }),
        )?;
        since = polled["next_since"].as_u64().unwrap_or(since);
        for event in polled["events"].as_array().into_iter().flatten() {
            if event["kind"] == "progress" {
                let message = event["message"].as_str().unwrap_or("");
                // Work that counts (a batch) reports `{done, total}`: a progress bar.
                if let Some((done, total)) = counts(&event["data"]) {
                    let b = bar.get_or_insert_with(|| indicatif::ProgressBar::new(total));
                    b.set_length(total);
                    b.set_position(done);
                } else {
                    spinner.set_message(message.to_owned());
                    spinner.tick();
                }
            }
        }
        match polled["state"].as_str() {
            Some("waiting") => {
                spinner.suspend(|| -> Result<()> {
                    let prompt = &polled["prompt"];
                    let answer = ask(prompt, yes)?;
                    c.call(
                        "flows.answer",
                        json!({ "run_id": run_id, "prompt_id": prompt["prompt_id"], "answer": answer }),
                    )?;
                    Ok(())
                })?;
            }
            Some("running") => {}
            _ => {
                spinner.finish_and_clear();
                if let Some(b) = bar {
                    b.finish();
                }
                return c.call("flows.get", json!({ "run_id": run_id }));
            }
        }
    }
}

/// The `{done, total}` of a progress event, when the flow counts its work.
fn counts(data: &Value) -> Option<(u64, u64)> {
    Some((data["done"].as_u64()?, data["total"].as_u64()?))
}

/// Asks a flow's question on the terminal.
fn ask(prompt: &Value, yes: bool) -> Result<Value> {
    let message = prompt["message"].as_str().unwrap_or("");
    let choices: Vec<&str> = prompt["choices"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if prompt["kind"] == "choose" {
        eprintln!("{message}");
        for (i, choice) in choices.iter().enumerate() {
            eprintln!("  {}. {choice}", i + 1);
        }
        if yes {
            let first = choices.first().context("the question has no choices")?;
            eprintln!("→ 1");
            return Ok(json!(first));
        }
        loop {
            let line = read_line("选择序号: ")?;
            match line.trim().parse::<usize>() {
                Ok(n) if (1..=choices.len()).contains(&n) => return Ok(json!(choices[n - 1])),
                _ => eprintln!("请输入 1 到 {} 之间的序号", choices.len()),
            }
        }
    }
    if yes {
        eprintln!("{message} → 是");
        return Ok(json!(true));
    }
    loop {
        let line = read_line(&format!("{message} [y/n]: "))?;
        match line.trim() {
            "y" | "Y" | "yes" | "是" => return Ok(json!(true)),
            "n" | "N" | "no" | "否" => return Ok(json!(false)),
            _ => eprintln!("请输入 y 或 n"),
        }
    }
}

fn read_line(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .take(ANSWER_BYTES_MAX as u64)
        .read_line(&mut line)?;
    if read == 0 {
        bail!("no answer (standard input is closed); use --yes to confirm without asking");
    }
    Ok(line)
}

fn secret(prompt: &str, from_stdin: bool) -> Result<String> {
    let text = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .take(ANSWER_BYTES_MAX as u64)
            .read_line(&mut line)?;
        line
    } else {
        rpassword::prompt_password(prompt).context("reading the password from the terminal")?
    };
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

fn group(c: &mut Client, out: &Output, g: GroupCommand) -> Result<()> {
    match g {
        GroupCommand::Info => {
            let r = c.call("group.info", json!({}))?;
            out.fields(&r)
        }
        GroupCommand::Orders(period) => query(c, out, "group.orders", &period),
        GroupCommand::Topups(period) => query(c, out, "group.topups", &period),
        GroupCommand::Topup { amount, remark } => {
            let r = c.call("group.topup", json!({ "amount": amount, "remark": remark }))?;
            out.fields(&r)
        }
        GroupCommand::BatchCreate { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let items: Vec<Value> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| match l.split_once(',') {
                    Some((card, amount)) => {
                        Ok(json!({ "card_number": card.trim(), "amount": amount.trim() }))
                    }
                    None => bail!("{}: expected card_number,amount, got {l:?}", file.display()),
                })
                .collect::<Result<_>>()?;
            let r = c.call("group.batch.create", json!({ "items": items }))?;
            out.fields(&r)
        }
        GroupCommand::BatchRun {
            batch_id,
            reader,
            key,
        } => flows(
            c,
            out,
            FlowsCommand::Run {
                flow: "group.batch_recharge".into(),
                reader: Some(reader),
                params: vec![("batch_id".into(), batch_id)],
                key,
                yes: false,
            },
        ),
        GroupCommand::Batch { batch_id } => {
            let r = c.call("group.batch.get", json!({ "batch_id": batch_id }))?;
            if out.json {
                return out.print_json(&r);
            }
            out.table(
                &r["items"],
                &[
                    "index",
                    "card_number",
                    "amount",
                    "status_label",
                    "order_id",
                    "balance_after",
                    "failure",
                ],
            )
        }
    }
}

/// A group query, printed or exported to a file whose extension picks the format.
fn query(c: &mut Client, out: &Output, method: &str, period: &Period) -> Result<()> {
    if let Some(path) = &period.export {
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("xlsx") => "xlsx",
            Some("csv") => "csv",
            _ => bail!("export to a .csv or .xlsx file"),
        };
        let mut params = period.params();
        params["format"] = json!(format);
        let r = c.call(&format!("{method}.export"), params)?;
        return write_file(path, &r);
    }
    let r = c.call(method, period.params())?;
    if out.json {
        return out.print_json(&r);
    }
    let rows = &r["rows"];
    let columns: Vec<String> = rows[0]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    out.table(rows, &columns)?;
    for (k, v) in r["stats"].as_object().into_iter().flatten() {
        println!("{k}: {}", plain(v));
    }
    Ok(())
}

fn audit(c: &mut Client, out: &Output, a: AuditCommand) -> Result<()> {
    let r = match a {
        AuditCommand::Pending => c.call("group.audit.pending", json!({}))?,
        AuditCommand::Topup {
            topup_id,
            reject,
            reason,
        } => c.call(
            "group.audit.topup",
            json!({ "topup_id": topup_id, "approve": !reject, "reason": reason }),
        )?,
        AuditCommand::Refund { order_id, reason } => c.call(
            "group.audit.refund",
            json!({ "order_id": order_id, "reason": reason }),
        )?,
    };
    out.print_json(&r)
}

fn records(c: &mut Client, out: &Output, r: RecordsCommand) -> Result<()> {
    match r {
        RecordsCommand::Query {
            plate,
            colour,
            from,
            to,
            page,
            page_size,
        } => {
            let r = c.call(
                "etc.records.query",
                json!({ "plate": plate, "plate_colour": colour, "from": from, "to": to, "page": page, "page_size": page_size }),
            )?;
            if out.json {
                return out.print_json(&r);
            }
            out.table(
                &r["records"],
                &[
                    "record_id",
                    "card_number",
                    "plate",
                    "balance_before",
                    "amount",
                    "balance_after",
                    "recharged_at",
                    "status_label",
                ],
            )?;
            println!("共 {} 条，第 {} 页", r["total"], r["page"]);
            Ok(())
        }
        RecordsCommand::Get { record_id } => {
            let r = c.call("etc.records.get", json!({ "record_id": record_id }))?;
            out.fields(&r)
        }
        RecordsCommand::Evidence { record_id, reader } => {
            let r = c.call(
                "etc.records.evidence",
                json!({ "record_id": record_id, "reader_id": reader }),
            )?;
            out.show(&r, |r| {
                format!(
                    "{}\n记录状态：{}",
                    r["evidence"]["explanation"].as_str().unwrap_or(""),
                    r["record"]["status_label"].as_str().unwrap_or("")
                )
            })
        }
        RecordsCommand::MarkNotLoaded {
            record_id,
            reader,
            reason,
        } => {
            let r = c.call(
                "etc.records.mark_not_loaded",
                json!({ "record_id": record_id, "reader_id": reader, "reason": reason }),
            )?;
            out.show(&r, |r| r["message"].as_str().unwrap_or("").to_owned())
        }
    }
}

fn operators(c: &mut Client, out: &Output, o: OperatorsCommand) -> Result<()> {
    let stdin = !std::io::stdin().is_terminal();
    let r = match o {
        OperatorsCommand::List => {
            let r = c.call("operators.list", json!({}))?;
            return out.table(
                &r,
                &["username", "display_name", "role", "group_id", "disabled"],
            );
        }
        OperatorsCommand::Create {
            username,
            display_name,
            role,
            group,
        } => {
            let password = secret("新操作员的密码: ", stdin)?;
            c.call(
                "operators.create",
                json!({ "username": username, "display_name": display_name, "role": role, "group_id": group, "password": password }),
            )?
        }
        OperatorsCommand::Disable { username } => c.call(
            "operators.set_disabled",
            json!({ "username": username, "disabled": true }),
        )?,
        OperatorsCommand::Enable { username } => c.call(
            "operators.set_disabled",
            json!({ "username": username, "disabled": false }),
        )?,
        OperatorsCommand::ResetPassword { username } => {
            let password = secret("新密码: ", stdin)?;
            c.call(
                "operators.reset_password",
                json!({ "username": username, "new_password": password }),
            )?
        }
    };
    out.show(&r, |_| "done".into())
}

/// A parameter value as the API wants it: `true`/`false` and whole numbers as JSON, amounts
/// and everything else as strings (decimal amounts stay exact).
fn typed(text: &str) -> Value {
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        t if !t.is_empty() && t.len() < 16 && t.bytes().all(|b| b.is_ascii_digit()) => t
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!(t)),
        t => json!(t),
    }
}

/// A fresh idempotency key: 128 random bits in hex.
fn new_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn describe_run(run: &Value) -> String {
    let state = run["state"].as_str().unwrap_or("");
    match state {
        "succeeded" => {
            let result = &run["result"];
            let mut lines = vec![result["message"].as_str().unwrap_or("完成").to_owned()];
            for (k, v) in result.as_object().into_iter().flatten() {
                if k != "message" && !v.is_object() && !v.is_array() {
                    lines.push(format!("  {k}: {}", plain(v)));
                }
            }
            lines.join("\n")
        }
        _ => format!(
            "{state}: {}",
            run["failure"]["message"].as_str().unwrap_or("")
        ),
    }
}

/// Writes what an answer carries to a file: `data_base64` decoded when present, else the
/// JSON answer.
fn write_file(path: &std::path::Path, answer: &Value) -> Result<()> {
    let bytes = match answer["data_base64"].as_str() {
        Some(b64) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .context("the answer's data_base64 is not base64")?
        }
        None => serde_json::to_vec_pretty(answer)?,
    };
    std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {} bytes to {}", bytes.len(), path.display());
    Ok(())
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Human or JSON output.
struct Output {
    json: bool,
}

impl Output {
    fn print_json(&self, v: &Value) -> Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    }

    fn show(&self, v: &Value, human: impl FnOnce(&Value) -> String) -> Result<()> {
        if self.json {
            return self.print_json(v);
        }
        println!("{}", human(v));
        Ok(())
    }

    fn fields(&self, v: &Value) -> Result<()> {
        self.show(v, |v| {
            v.as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| !v.is_object() && !v.is_array())
                .map(|(k, v)| format!("{k}: {}", plain(v)))
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    fn table(&self, rows: &Value, columns: &[&str]) -> Result<()> {
        if self.json {
            return self.print_json(rows);
        }
        let rows: Vec<Vec<String>> = rows
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| columns.iter().map(|c| plain(&r[*c])).collect())
            .collect();
        let width = |i: usize| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([columns[i].len()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns.len()).map(width).collect();
        let line = |cells: Vec<String>| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(c.chars().count()))))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        println!("{}", line(columns.iter().map(|c| c.to_string()).collect()));
        for row in rows {
            println!("{}", line(row));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_bar_comes_from_the_structured_progress() {
        assert_eq!(super::counts(&json!({"done": 1, "total": 3})), Some((1, 3)));
        // A message alone, whatever its words, draws no bar.
        assert_eq!(super::counts(&json!({})), None);
        assert_eq!(super::counts(&json!({"done": "1", "total": 3})), None);
    }
}
