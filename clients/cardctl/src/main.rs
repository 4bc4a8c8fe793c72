//! `cardctl`: cardd from the command line.
//!
//! Everything goes through the daemon's JSON-RPC API, with the same operators, roles and audit
//! as the web console: `cardctl login` keeps a session token in a file only the user can read,
//! later commands use it. Output is a short human summary, or the API's JSON with `--json` (for
//! scripts). Flows run interactively: the questions a flow asks (卡内余额…是否圈存？) are asked on
//! the terminal, or answered yes by `--yes`; the idempotency key is printed before the start is
//! sent, so an interrupted run can be re-sent with `--key` and never loads twice.
//!
//! Every call is typed on `cardd_api` (see [`client`]): params built from, and answers decoded
//! into, the API's own types. Only `cardctl call`, whose method the user names, is untyped.

mod client;

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use cardd_api::flows::{self as api_flows, Answer, Prompt, RunRecord, RunState};
use cardd_api::group::{self as api_group, ExportFormat, ExportParams, ExportResult};
use cardd_api::vocab::Preset;
use cardd_api::{
    auth, card, etc as api_etc, operators as api_operators, readers, Method, NoParams, Role,
};
use clap::{CommandFactory, Parser, Subcommand};
use serde::Serialize;
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
    /// Reader plugins (vendor programs) and their health: state, restarts, backoff, last error.
    Plugins,
    /// Restart a reader plugin at once, skipping its backoff (administrators).
    RestartPlugin {
        /// The plugin's instance name (`name` in its `[[readers]]` options).
        instance: String,
    },
    /// Read the card on a reader: type, number, plate, balance, validity. Presents no PIN and
    /// starts no load.
    Card {
        reader: String,
        /// Also read the online counter: presents the configured PIN (VERIFY PIN) and sends a
        /// probing INITIALIZE FOR LOAD of 1 fen to an ETC card.
        #[arg(long)]
        online_counter: bool,
    },
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
    fn params(&self) -> Result<api_group::QueryParams> {
        let preset = match &self.preset {
            Some(p) => Some(serde_json::from_value::<Preset>(json!(p)).with_context(|| {
                format!(
                    "unknown preset {p:?}: last_7_days, last_month, last_3_months or last_6_months"
                )
            })?),
            None => None,
        };
        Ok(api_group::QueryParams {
            group_id: None,
            preset,
            start_date: self.from.clone(),
            end_date: self.to.clone(),
        })
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
            let r = c.call::<auth::Login>(&auth::LoginParams {
                username: user.clone(),
                password,
            })?;
            let path = client::save_session(c.url(), &r.token, &user)?;
            out.show(&value(&r)?, |_| {
                format!(
                    "logged in as {} ({}); session kept in {}",
                    user,
                    r.operator.role_label,
                    path.display()
                )
            })
        }
        Command::Logout => {
            let r = c.call::<auth::Logout>(&NoParams {});
            client::forget_session();
            r.map(|_| println!("logged out"))
        }
        Command::Whoami => {
            let r = c.call::<auth::Whoami>(&NoParams {})?;
            out.show(&value(&r)?, |_| {
                format!("{} ({})", r.operator.username, r.operator.role.as_str())
            })
        }
        Command::Passwd => {
            let stdin = !std::io::stdin().is_terminal();
            let old = secret("原密码: ", stdin)?;
            let new = secret("新密码: ", stdin)?;
            let confirm = secret("确认密码: ", stdin)?;
            let r = c.call::<auth::ChangePassword>(&auth::ChangePasswordParams {
                old_password: old,
                new_password: new,
                confirm_password: confirm,
            })?;
            out.show(&value(&r)?, |_| "密码已修改".into())
        }
        Command::Readers => {
            let r = c.call::<readers::List>(&NoParams {})?;
            out.table(&value(&r)?, &["id", "name", "driver", "card_present"])
        }
        Command::Plugins => {
            let r = c.call::<readers::Plugins>(&NoParams {})?;
            out.table(
                &value(&r)?,
                &[
                    "instance",
                    "state",
                    "readers",
                    "restarts",
                    "backoff_ms",
                    "last_error",
                ],
            )
        }
        Command::RestartPlugin { instance } => {
            let r = c.call::<readers::RestartPlugin>(&readers::RestartPluginParams { instance })?;
            out.show(&value(&r)?, |p| {
                format!(
                    "读卡器插件 {} 正在重启",
                    p["instance"].as_str().unwrap_or("?")
                )
            })
        }
        Command::Card {
            reader,
            online_counter,
        } => {
            let r = c.call::<card::Summary>(&card::SummaryParams {
                reader_id: reader,
                online_counter,
            })?;
            out.fields(&value(&r)?)
        }
        Command::Flows(f) => flows(&mut c, &out, f),
        Command::Records(r) => records(&mut c, &out, r),
        Command::Recharge {
            plate,
            colour,
            amount,
            channel,
        } => {
            let r = c.call::<api_etc::Recharge>(&api_etc::RechargeParams {
                plate,
                plate_colour: colour,
                amount,
                channel,
            })?;
            out.fields(&value(&r)?)
        }
        Command::Operators(o) => operators(&mut c, &out, o),
        Command::Group(g) => group(&mut c, &out, g),
        Command::Groups(GroupsCommand::List) => {
            let r = c.call::<api_group::GroupsList>(&NoParams {})?;
            out.table(
                &value(&r)?,
                &["group_id", "group_name", "terminal_no", "available_quota"],
            )
        }
        Command::Groups(GroupsCommand::Upsert {
            group_id,
            name,
            terminal,
        }) => {
            let r = c.call::<api_group::GroupsUpsert>(&api_group::GroupInput {
                group_id,
                name,
                terminal_no: terminal,
            })?;
            out.fields(&value(&r)?)
        }
        Command::Audit(a) => audit(&mut c, &out, a),
        Command::Call {
            method,
            params,
            out: file,
        } => {
            let params: Value =
                serde_json::from_str(&params).context("the parameters must be a JSON object")?;
            let r = c.call_by_name(&method, params)?;
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
            let r = c.call::<api_flows::List>(&NoParams {})?;
            out.table(&value(&r)?, &["name", "title", "version", "description"])
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
            let start = api_flows::StartParams {
                flow,
                params: Value::Object(params),
                idempotency_key: key,
                reader_id: reader,
            };
            let run = c.call::<api_flows::Start>(&start)?;
            let done = follow(c, &run.run_id, yes)?;
            out.show(&value(&done)?, describe_run)?;
            let status = done.result.as_ref().and_then(|r| r["status"].as_str());
            match (done.state, status) {
                (RunState::Succeeded, Some("unknown")) => bail!(
                    "the outcome is unknown (结果待确认): put the card back on a reader so cardd settles it from the card; do not recharge again"
                ),
                (RunState::Succeeded, _) => Ok(()),
                _ => bail!("the run did not succeed"),
            }
        }
        FlowsCommand::Get { run_id } => {
            let r = c.call::<api_flows::Get>(&api_flows::RunParams { run_id })?;
            out.show(&value(&r)?, describe_run)
        }
        FlowsCommand::Cancel { run_id } => {
            let r = c.call::<api_flows::Cancel>(&api_flows::RunParams { run_id })?;
            out.show(&value(&r)?, describe_run)
        }
    }
}

/// Follows a run to its end, answering its questions; progress goes to standard error.
fn follow(c: &mut Client, run_id: &str, yes: bool) -> Result<RunRecord> {
    let spinner = indicatif::ProgressBar::new_spinner();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut since = 0u64;
    loop {
        let polled = c.call::<api_flows::Events>(&api_flows::RunEventsParams {
            run_id: run_id.to_owned(),
            since,
            wait_ms: Some(POLL_WAIT_MS),
        })?;
        since = polled.next_since;
        for event in polled.events.iter().filter(|e| e.kind == "progress") {
            // Work that counts (a batch) reports `{done, total}`: a progress bar.
            if let Some(progress) = event.progress() {
                let b = bar.get_or_insert_with(|| indicatif::ProgressBar::new(progress.total));
                b.set_length(progress.total);
                b.set_position(progress.done);
            } else {
                spinner.set_message(event.message.clone());
                spinner.tick();
            }
        }
        match (polled.state, &polled.prompt) {
            (RunState::Waiting, Some(prompt)) => {
                spinner.suspend(|| -> Result<()> {
                    let answer = ask(prompt, yes)?;
                    c.call::<api_flows::AnswerPrompt>(&api_flows::AnswerParams {
                        run_id: run_id.to_owned(),
                        prompt_id: prompt.prompt_id,
                        answer,
                    })?;
                    Ok(())
                })?;
            }
            (RunState::Running | RunState::Waiting, _) => {}
            _ => {
                spinner.finish_and_clear();
                if let Some(b) = bar {
                    b.finish();
                }
                return c.call::<api_flows::Get>(&api_flows::RunParams {
                    run_id: run_id.to_owned(),
                });
            }
        }
    }
}

/// Asks a flow's question on the terminal.
fn ask(prompt: &Prompt, yes: bool) -> Result<Answer> {
    let message = &prompt.message;
    let choices = &prompt.choices;
    if prompt.kind == "choose" {
        eprintln!("{message}");
        for (i, choice) in choices.iter().enumerate() {
            eprintln!("  {}. {choice}", i + 1);
        }
        if yes {
            let first = choices.first().context("the question has no choices")?;
            eprintln!("→ 1");
            return Ok(Answer::Choice(first.clone()));
        }
        loop {
            let line = read_line("选择序号: ")?;
            match line.trim().parse::<usize>() {
                Ok(n) if (1..=choices.len()).contains(&n) => {
                    return Ok(Answer::Choice(choices[n - 1].clone()))
                }
                _ => eprintln!("请输入 1 到 {} 之间的序号", choices.len()),
            }
        }
    }
    if yes {
        eprintln!("{message} → 是");
        return Ok(Answer::Confirm(true));
    }
    loop {
        let line = read_line(&format!("{message} [y/n]: "))?;
        match line.trim() {
            "y" | "Y" | "yes" | "是" => return Ok(Answer::Confirm(true)),
            "n" | "N" | "no" | "否" => return Ok(Answer::Confirm(false)),
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
            let r = c.call::<api_group::Info>(&api_group::GroupScope::default())?;
            out.fields(&value(&r)?)
        }
        GroupCommand::Orders(period) => {
            query::<api_group::Orders, api_group::OrdersExport>(c, out, &period)
        }
        GroupCommand::Topups(period) => {
            query::<api_group::TopUps, api_group::TopUpsExport>(c, out, &period)
        }
        GroupCommand::Topup { amount, remark } => {
            let r = c.call::<api_group::TopUp>(&api_group::TopUpParams { amount, remark })?;
            out.fields(&value(&r)?)
        }
        GroupCommand::BatchCreate { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let items: Vec<api_group::BatchItemParams> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| match l.split_once(',') {
                    Some((card, amount)) => Ok(api_group::BatchItemParams {
                        card_number: card.trim().to_owned(),
                        amount: amount.trim().to_owned(),
                    }),
                    None => bail!("{}: expected card_number,amount, got {l:?}", file.display()),
                })
                .collect::<Result<_>>()?;
            let r = c.call::<api_group::BatchCreate>(&api_group::BatchCreateParams { items })?;
            out.fields(&value(&r)?)
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
            let r = value(&c.call::<api_group::BatchGet>(&api_group::BatchIdParams { batch_id })?)?;
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

/// A group query `Q`, printed, or exported by its export method `E` to a file whose extension
/// picks the format.
fn query<Q, E>(c: &mut Client, out: &Output, period: &Period) -> Result<()>
where
    Q: Method<Params = api_group::QueryParams>,
    E: Method<Params = ExportParams, Result = ExportResult>,
{
    let params = period.params()?;
    if let Some(path) = &period.export {
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("xlsx") => ExportFormat::Xlsx,
            Some("csv") => ExportFormat::Csv,
            _ => bail!("export to a .csv or .xlsx file"),
        };
        let r = c.call::<E>(&ExportParams {
            group_id: params.group_id,
            preset: params.preset,
            start_date: params.start_date,
            end_date: params.end_date,
            format,
        })?;
        return write_file(path, &value(&r)?);
    }
    let r = value(&c.call::<Q>(&params)?)?;
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
        AuditCommand::Pending => value(&c.call::<api_group::AuditPendingList>(&NoParams {})?)?,
        AuditCommand::Topup {
            topup_id,
            reject,
            reason,
        } => value(
            &c.call::<api_group::AuditTopUp>(&api_group::AuditTopUpParams {
                topup_id,
                approve: !reject,
                reason,
            })?,
        )?,
        AuditCommand::Refund { order_id, reason } => value(&c.call::<api_group::AuditRefund>(
            &api_group::OrderDecisionParams { order_id, reason },
        )?)?,
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
            let r = value(&c.call::<api_etc::RecordsQuery>(&api_etc::QueryParams {
                plate,
                plate_colour: colour,
                from,
                to,
                page,
                page_size,
            })?)?;
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
            let r = c.call::<api_etc::RecordGet>(&api_etc::RecordParams { record_id })?;
            out.fields(&value(&r)?)
        }
        RecordsCommand::Evidence { record_id, reader } => {
            let r = c.call::<api_etc::RecordEvidence>(&api_etc::EvidenceParams {
                record_id,
                reader_id: reader,
            })?;
            out.show(&value(&r)?, |_| {
                format!(
                    "{}\n记录状态：{}",
                    r.evidence.explanation, r.record.status_label
                )
            })
        }
        RecordsCommand::MarkNotLoaded {
            record_id,
            reader,
            reason,
        } => {
            let r = c.call::<api_etc::MarkNotLoaded>(&api_etc::MarkParams {
                record_id,
                reader_id: reader,
                reason,
            })?;
            out.show(&value(&r)?, |_| r.message.clone())
        }
    }
}

fn operators(c: &mut Client, out: &Output, o: OperatorsCommand) -> Result<()> {
    let stdin = !std::io::stdin().is_terminal();
    let r = match o {
        OperatorsCommand::List => {
            let r = c.call::<api_operators::List>(&NoParams {})?;
            return out.table(
                &value(&r)?,
                &["username", "display_name", "role", "group_id", "disabled"],
            );
        }
        OperatorsCommand::Create {
            username,
            display_name,
            role,
            group,
        } => {
            let role: Role = serde_json::from_value(json!(role)).with_context(|| {
                format!("unknown role {role:?}: teller, supervisor, group_operator, auditor, kiosk or admin")
            })?;
            let password = secret("新操作员的密码: ", stdin)?;
            value(
                &c.call::<api_operators::Create>(&api_operators::NewOperator {
                    username,
                    display_name,
                    role,
                    group_id: group,
                    password,
                })?,
            )?
        }
        OperatorsCommand::Disable { username } => value(&c.call::<api_operators::SetDisabled>(
            &api_operators::SetDisabledParams {
                username,
                disabled: true,
            },
        )?)?,
        OperatorsCommand::Enable { username } => value(&c.call::<api_operators::SetDisabled>(
            &api_operators::SetDisabledParams {
                username,
                disabled: false,
            },
        )?)?,
        OperatorsCommand::ResetPassword { username } => {
            let password = secret("新密码: ", stdin)?;
            value(&c.call::<api_operators::ResetPassword>(
                &api_operators::ResetPasswordParams {
                    username,
                    new_password: password,
                },
            )?)?
        }
    };
    out.show(&r, |_| "done".into())
}

/// A typed answer as JSON, for `--json` and the generic summaries.
fn value(answer: &impl Serialize) -> Result<Value> {
    serde_json::to_value(answer).context("encoding the answer")
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
