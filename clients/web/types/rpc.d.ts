// Generated from docs/openrpc.json by xtask (xtask/src/rpc_types.rs): do not edit.
// `UPDATE_DOCS=1 cargo test -p xtask` rewrites it after the API changes.

/** An operator's role. */
export type Role =
  | 'teller'
  | 'supervisor'
  | 'group_operator'
  | 'auditor'
  | 'kiosk'
  | 'admin';

/** One record of the log: what was done, by whom, plus its place in the chain. */
export type AuditRecord = {
  /** What was done, e.g. the JSON-RPC method (`auth.login`, `card.load`). */
  action: string;
  /** When it was appended, RFC 3339 in UTC. */
  at: string;
  /** Parameters and results worth keeping (never passwords or keys). */
  detail: unknown;
  /** Hex SHA-256 over `prev_hash` and this record's canonical JSON without `hash`. */
  hash: string;
  /** The operator's user name, if the action was done in a session. */
  operator?: string | null;
  /** How it ended, e.g. `ok` or an error code name. */
  outcome: string;
  /** The previous record's `hash` (64 zeros for seq 1). */
  prev_hash: string;
  /** The operator's role at the time. */
  role?: Role | null;
  /**
   * Position in the log, from 1, without gaps.
   * Format: `uint64`.
   */
  seq: number;
  /** What it was done to: a user name, a reader id, a card number. */
  target?: string | null;
};

/** What `audit.verify` returns. */
export type AuditVerifyResult = {
  chain_ok: boolean;
  /** Format: `uint64`. */
  records: number;
};

/** The result of a method that only says it was done: `ok` and a message for the operator. */
export type Done = {
  /** A message to show the operator. */
  message: string;
  ok: boolean;
};

/** The logged-in operator. */
export type SessionView = {
  display_name: string;
  group_id?: string | null;
  role: Role;
  /** The role's zh-CN name. */
  role_label: string;
  username: string;
};

/** What `auth.login` returns. */
export type LoginResult = {
  /**
   * The session ends after this many seconds without a request.
   * Format: `uint64`.
   */
  idle_timeout_s: number;
  operator: SessionView;
  /** Send as `Authorization: Bearer <token>` (or `?token=` on a WebSocket upgrade). */
  token: string;
};

/**
 * What `auth.whoami` returns: the operator, the session rule a client warns about, and the
 * password rule 修改密码 states up front.
 */
export type WhoAmI = {
  display_name: string;
  group_id?: string | null;
  /**
   * The session ends after this many seconds without a request.
   * Format: `uint64`.
   */
  idle_timeout_s: number;
  /**
   * The most characters a new password may have.
   * Format: `uint`.
   */
  password_chars_max: number;
  /**
   * The fewest characters a new password may have.
   * Format: `uint`.
   */
  password_chars_min: number;
  role: Role;
  /** The role's zh-CN name. */
  role_label: string;
  username: string;
};

/** What `card.balance` returns. */
export type CardBalance = {
  /** Balance in yuan as a decimal string. */
  balance: string;
  /**
   * Balance in fen.
   * Format: `int64`.
   */
  balance_fen: number;
};

/** The kind of card. */
export type CardKind = 'etc' | 'city' | 'obu';

/** What `card.summary` returns. */
export type CardSummary = {
  /** `tdes` or `sm4`. */
  algorithm?: string | null;
  /** Balance in yuan as a decimal string. */
  balance?: string | null;
  /**
   * Balance in fen.
   * Format: `int64`.
   */
  balance_fen?: number | null;
  /** The displayed card number (20 digits), or the OBU number. */
  card_number: string;
  /** 储值卡 / 记账卡 for ETC cards. */
  card_type?: string | null;
  /** YYYY-MM-DD. */
  expiry_date?: string | null;
  kind?: CardKind | null;
  /** zh-CN name of the kind. */
  kind_label: string;
  /** Why some fields are missing (for example the PIN was refused). */
  notes: string[];
  /** OBU only: activated (tamper flag set). */
  obu_activated?: boolean | null;
  /**
   * Online (load) transaction counter: only when asked for (`online_counter`).
   * Format: `uint16`.
   */
  online_atc?: number | null;
  /** Plate number as printed (ETC cards and OBUs). */
  plate?: string | null;
  /**
   * Plate colour code (0 blue, 1 yellow, …).
   * Format: `uint16`.
   */
  plate_colour?: number | null;
  /** Plate colour in zh-CN (蓝色 …). */
  plate_colour_label?: string | null;
  /** YYYY-MM-DD. */
  start_date?: string | null;
};

/** One change in a record's history. */
export type ChangeView = {
  /**
   * `recharge`, `begin_load`, `finish_load`, `abort_load`, `flag_reconciliation`,
   * `mark_not_loaded`, `resolve_reconciliation`.
   */
  action: string;
  /** 充值, 开始圈存, 圈存成功, … */
  action_label: string;
  at: string;
  from_label?: string | null;
  /** The operator's user name (`cardd` for the daemon itself). */
  operator: string;
  /** The operator's display name (姓名) as people read it; 系统 for the daemon itself. */
  operator_name: string;
  reason?: string | null;
  to_label: string;
  txn_id?: string | null;
};

/** A recharge record (充值记录) as clients see it: every field the counter app shows. */
export type RecordView = {
  /** 充值金额, yuan. */
  amount: string;
  /** 充值后的金额, yuan; `null` until loaded. */
  balance_after?: string | null;
  /** 充值前的金额, yuan; `null` until loaded. */
  balance_before?: string | null;
  /** 用户卡卡号. */
  card_number: string;
  /** Where it was paid (银行柜台, 网上银行, …). */
  channel: string;
  /** Who did what and when, oldest first. */
  history: ChangeView[];
  load_txn_id?: string | null;
  loaded_at?: string | null;
  /** 车牌号. */
  plate: string;
  /**
   * 车牌颜色 code and name.
   * Format: `uint16`.
   */
  plate_colour: number;
  plate_colour_label: string;
  /** 充值时间, RFC 3339 at +08:00. */
  recharged_at: string;
  record_id: string;
  /** `not_loaded`, `loading`, `loaded`, `needs_reconciliation`. */
  status: string;
  /** 未圈存, 圈存中, 已圈存, 待核对. */
  status_label: string;
};

/** A load found in the card's own transaction log (0018). */
export type CardLogEvidence = {
  /** Amount, yuan. */
  amount: string;
  /**
   * The online counter before the load.
   * Format: `uint16`.
   */
  atc: number;
  /** Date and time as the card keeps them (`YYYYMMDD`, `HHMMSS`). */
  date: string;
  /** Terminal number, hex. */
  terminal: string;
  time: string;
};

/** One load transaction of the record, as the journal knows it. */
export type LoadEvidence = {
  /** The load's amount, yuan. */
  amount: string;
  /** 圈存前的金额 the card reported for this load, yuan. */
  balance_before: string;
  /** How the outcome was established (`card_response`, `recovery`, `manual`). */
  decided_by?: string | null;
  /**
   * The card's online counter before this load.
   * Format: `uint16`.
   */
  online_atc_before: number;
  /** `intent`, `committed`, `not_applied` or `needs_reconciliation`. */
  state: string;
  /** The card's TAC (verified), for committed loads. */
  tac?: string | null;
  txn_id: string;
};

/** Did a load land: what the card and the journal (decided from the card) say about it. */
export type Verdict = 'landed' | 'not_landed' | 'unknown';

/** The evidence about one record. */
export type Evidence = {
  /** The card's balance now, yuan (when read). */
  card_balance?: string | null;
  /** Whether the card itself was read for this answer. */
  card_checked: boolean;
  /** The matching load in the card's log, if any. */
  card_log?: CardLogEvidence | null;
  /** What the evidence means, for the teller (zh-CN). */
  explanation: string;
  /** The record's load transactions in the journal, oldest first. */
  loads: LoadEvidence[];
  record_id: string;
  verdict: Verdict;
};

/** The evidence and the record as it is after the check. */
export type EvidenceResult = {
  evidence: Evidence;
  record: RecordView;
};

/** The outcome of 修改圈存状态. */
export type MarkResult = {
  evidence: Evidence;
  /** 修改圈存状态成功！请进行圈存操作 */
  message: string;
  record: RecordView;
};

/** A page of records, newest first. */
export type RecordPage = {
  /** Format: `uint32`. */
  page: number;
  /** Format: `uint32`. */
  page_size: number;
  records: RecordView[];
  /** Format: `uint64`. */
  total: number;
};

/**
 * What an OBU's vehicle information file (ESAM DF01 EF01) holds besides plate, plate colour
 * and vehicle class; see `docs/card-protocol.md`.
 */
export type VehicleDetails = {
  /**
   * 车轴数.
   * Format: `uint8`.
   */
  axles: number;
  /** 车辆描述 (make and model), at most [`VEHICLE_DESCRIPTION_GBK_BYTES_MAX`] GBK bytes. */
  description?: string;
  /** 发动机号, ASCII letters, digits and `-`, at most [`ENGINE_NUMBER_CHARS_MAX`]. */
  engine_number?: string;
  /**
   * 车高, millimetres.
   * Format: `uint16`.
   */
  height_mm: number;
  /**
   * 车长, millimetres.
   * Format: `uint16`.
   */
  length_mm: number;
  /**
   * 核定载质量 in kg (trucks) or 核定载人数 (passenger vehicles).
   * Format: `uint32`.
   */
  load_kg_or_seats: number;
  /**
   * 车辆用户类型 ([`VEHICLE_USER_TYPES`]).
   * Format: `uint8`.
   */
  user_type: number;
  /**
   * 轴距, millimetres.
   * Format: `uint16`.
   */
  wheelbase_mm: number;
  /**
   * 车轮数.
   * Format: `uint8`.
   */
  wheels: number;
  /**
   * 车宽, millimetres.
   * Format: `uint16`.
   */
  width_mm: number;
};

/** A vehicle account as clients see it. */
export type VehicleView = {
  /** Cards issued to the vehicle, oldest first; the last is in service. */
  card_numbers: string[];
  /** What the OBU's vehicle file needs besides plate, colour and class, when known. */
  details?: VehicleDetails | null;
  obu_contract_serial?: string | null;
  owner_name: string;
  plate: string;
  /** Format: `uint16`. */
  plate_colour: number;
  plate_colour_label: string;
  updated_at: string;
  updated_by: string;
  /** Format: `uint8`. */
  vehicle_class: number;
  vehicle_class_label: string;
};

/**
 * What `etc.vehicles.upsert` (`cardd_etc::IssuerHost::upsert_vehicle`) takes: a vehicle account as
 * entered. The plate is
 * normalised and everything validated before anything is stored.
 */
export type VehicleInput = {
  /** Card numbers, oldest first; the last is the card in service. */
  card_numbers: string[];
  /** Vehicle details for the OBU's vehicle file, if known. */
  details?: VehicleDetails | null;
  /** The OBU's contract serial, if any. */
  obu_contract_serial?: string | null;
  /** The owner's name. */
  owner_name: string;
  /** 车牌号. */
  plate: string;
  /**
   * 车牌颜色 code.
   * Format: `uint16`.
   */
  plate_colour: number;
  /**
   * Toll vehicle class.
   * Format: `uint8`.
   */
  vehicle_class: number;
};

/** Why a lease ended. */
export type LeaseEnd = 'released' | 'expired' | 'reader_gone';

/** Why a session ended; sent as the last notification of its subscriptions. */
export type SessionEnd =
  | 'logged_out'
  | 'idle_timeout'
  | 'operator_disabled'
  | 'password_reset'
  | 'password_changed'
  | 'role_changed'
  | 'evicted';

/** An event with its sequence number and time. */
export type Event = {
  /** RFC 3339 UTC. */
  at: string;
  /** Format: `uint64`. */
  seq: number;
} & (
  | {
    driver: string;
    name: string;
    reader_id: string;
    type: 'reader_added';
  }
  | {
    reader_id: string;
    type: 'reader_removed';
  }
  | {
    atr: string;
    reader_id: string;
    type: 'card_inserted';
  }
  | {
    reader_id: string;
    type: 'card_removed';
  }
  | {
    /** Format: `uint64`. */
    expires_in_ms: number;
    holder: string;
    lease_id: string;
    reader_id: string;
    type: 'lease_taken';
  }
  | {
    lease_id: string;
    reader_id: string;
    reason: LeaseEnd;
    type: 'lease_released';
  }
  | {
    card_number: string;
    outcome: string;
    reader_id: string;
    txn_id: string;
    type: 'load_resolved';
  }
  | {
    reason: SessionEnd;
    type: 'session_ended';
  });

/** What a poll returns. */
export type PollResult = {
  events: Event[];
  /** True when events between `since` and the first returned one were dropped from the buffer. */
  gap: boolean;
  /**
   * Pass this as `since` in the next poll.
   * Format: `uint64`.
   */
  next_since: number;
};

/** An answer to a prompt. */
export type Answer = boolean | string;

/** Something that happened in a run. */
export type RunEvent = {
  at: string;
  data: unknown;
  /**
   * `state`, `progress` (data `{done, total}` when the flow counts its work, e.g. a batch),
   * `prompt`, `answer` (data `{answer, operator}`: what was answered and by whom), `log`,
   * `load`.
   */
  kind: string;
  message: string;
  /** Format: `uint64`. */
  seq: number;
};

/** Why a run failed, as the client sees it. */
export type RunFailure = {
  /** `flow_error`, `limit`, `cancelled`, `prompt_timeout`, `interrupted`, `engine`. */
  kind: string;
  message: string;
};

/** What is known about one load of a run whose answer was lost, read from the journal. */
export type RunLoad = {
  /** The load's amount, yuan. */
  amount: string;
  /** The card's balance after the load, yuan, for a credited load. */
  balance_after?: string | null;
  card_number: string;
  /** What it means and what to do next (zh-CN). */
  message: string;
  /**
   * `credited` (the money is on the card), `not_credited` (it is not), or `unknown` (the
   * card must be presented again; never to be read as failed).
   */
  outcome: string;
  /** The journal state: `intent`, `committed`, `not_applied` or `needs_reconciliation`. */
  state: string;
  /** The card's verified TAC, for a credited load. */
  tac?: string | null;
  txn_id: string;
};

/** A question the flow asks the client. */
export type Prompt = {
  choices: string[];
  /** `confirm` (answer true/false) or `choose` (answer one of `choices`). */
  kind: string;
  /** The text to show (zh-CN, as the flow wrote it). */
  message: string;
  /** Format: `uint32`. */
  prompt_id: number;
};

/** Where a run stands. */
export type RunState =
  | 'running' | 'succeeded' | 'failed' | 'cancelled'
  | 'waiting'
  | 'interrupted';

/** A run, as stored and as clients see it. */
export type RunRecord = {
  created_at: string;
  events: RunEvent[];
  failure?: RunFailure | null;
  flow: string;
  idempotency_key: string;
  /**
   * For a run interrupted by a restart: each load it started, with its outcome as the
   * journal knows it when the run is read (a later settlement from the card shows here).
   */
  loads?: RunLoad[];
  operator: string;
  params: unknown;
  prompt?: Prompt | null;
  reader_id?: string | null;
  result?: unknown;
  run_id: string;
  state: RunState;
  updated_at: string;
  version: string;
};

/** What `flows.events` returns. */
export type RunEvents = {
  events: RunEvent[];
  /** Format: `uint64`. */
  next_since: number;
  prompt?: Prompt | null;
  state: RunState;
};

/** What a flow definition looks like to clients. */
export type FlowInfo = {
  description?: string | null;
  name: string;
  /** JSON Schema of the parameters. */
  params: unknown;
  roles: Role[];
  title: string;
  version: string;
};

/** The order's card read on a reader: does it hold the proof of this order's load? */
export type CardCheck = {
  /** The card's balance now, yuan. */
  balance?: string | null;
  card_number: string;
  /** What the card shows, in words (zh-CN). */
  message: string;
  /**
   * The card answered GET TRANSACTION PROVE for the load's counter with our MAC2 and a TAC
   * that verifies: the card was credited with this load.
   */
  proof_of_this_load: boolean;
  reader_id: string;
};

/** Where a recharge order (充值订单) stands. */
export type OrderStatus = 'reserved' | 'pending' | 'succeeded' | 'failed' | 'refunded';

/** One row of the recharge query. */
export type OrderRow = {
  /** 充值金额, yuan. */
  amount: string;
  /** 现余额, yuan (empty until known). */
  balance_after: string;
  /** 充值前余额, yuan (empty until known). */
  balance_before: string;
  /** 卡号. */
  card_number: string;
  /** 充值时间, RFC 3339 +08:00. */
  created_at: string;
  /** 操作员 (user name). */
  operator: string;
  /** 操作员 as people read it (display name; the user name until [`NamedRow::name_people`]). */
  operator_name: string;
  /** 订单编号. */
  order_id: string;
  /** 充值后集团额度, yuan. */
  quota_after: string;
  /** 充值前集团额度, yuan. */
  quota_before: string;
  /** 备注: why it failed, if it did. */
  remark: string;
  /** `reserved`, `succeeded`, `failed`, `refunded`. */
  status: OrderStatus;
  /** 状态, zh-CN. */
  status_label: string;
};

/** The card evidence an auditor sees for an order. */
export type Evidence2 = {
  /** What the card itself shows, when the auditor asked with the card on a reader. */
  card?: CardCheck | null;
  /** The card's balance after a landed load (yuan). */
  card_balance_after?: string | null;
  /** The card's balance before the load, as the card reported it (yuan), when a load started. */
  card_balance_before?: string | null;
  /** How the journal decided (`card_response`, `recovery`, `manual`), when it did. */
  decided_by?: string | null;
  /** `none`, `intent`, `committed`, `not_applied`, `needs_reconciliation`. */
  journal_state: string;
  /** The verdict in words, with what to do (zh-CN). */
  message: string;
  /**
   * The card's online counter before the load, when a load started.
   * Format: `uint16`.
   */
  online_atc_before?: number | null;
  /** The order. */
  order: OrderRow;
  /** Its journal transaction. */
  txn_id: string;
  /** The verdict. */
  verdict: Verdict;
};

/** Where a quota top-up (额度充值) stands. */
export type TopUpStatus = 'pending' | 'unknown' | 'failed' | 'paid' | 'approved' | 'rejected';

/** A paid transfer awaiting audit. */
export type PendingTopUp = {
  /** 转账金额, yuan. */
  amount: string;
  /** 审核员 (user name; empty until audited). */
  auditor: string;
  /** 审核员 as people read it (display name; empty until audited). */
  auditor_name: string;
  /** 银行返回流水号 (empty until paid). */
  bank_serial: string;
  /** 转账时间, RFC 3339 +08:00. */
  created_at: string;
  group_id: string;
  /** 操作员 (user name). */
  operator: string;
  /** 操作员 as people read it (display name). */
  operator_name: string;
  /** 备注. */
  remark: string;
  /** `pending`, `unknown`, `failed`, `paid`, `approved`, `rejected`. */
  status: TopUpStatus;
  /** 状态, zh-CN. */
  status_label: string;
  /** 订单编号. */
  topup_id: string;
};

/** What waits for an auditor. */
export type AuditPending = {
  /** Failed recharges with their card evidence (oldest first). */
  orders: Evidence2[];
  /** Transfers the bank paid, to approve or reject (oldest first). */
  topups: PendingTopUp[];
};

/** The transfer result page (转账成功). */
export type TopUpResult = {
  /** 充值转账金额, yuan. */
  amount: string;
  /** 银行返回流水号 (once paid). */
  bank_serial?: string | null;
  group_id: string;
  /** 集团名称. */
  group_name: string;
  /** What to tell the operator. */
  message: string;
  /** 操作员. */
  operator: string;
  status: TopUpStatus;
  status_label: string;
  /** 订单编号. */
  topup_id: string;
};

/** One card of a new batch. */
export type BatchItemParams = {
  /** Decimal yuan string. */
  amount: string;
  card_number: string;
};

/** One card's outcome. */
export type BatchItemReport = {
  /** Yuan. */
  amount: string;
  /**
   * In fen, for flows.
   * Format: `int64`.
   */
  amount_fen: number;
  /** 现余额 after a successful recharge, yuan. */
  balance_after?: string | null;
  card_number: string;
  /** Why it failed. */
  failure?: string | null;
  /**
   * From 0.
   * Format: `uint`.
   */
  index: number;
  order_id?: string | null;
  /** `pending` (not tried yet) or the order's status. */
  status: string;
  status_label: string;
};

/** A batch with each card's outcome (the per-card report). */
export type BatchReport = {
  batch_id: string;
  /**
   * Cards whose recharge failed (refund pending or refunded).
   * Format: `uint`.
   */
  failed: number;
  group_id: string;
  /**
   * Cards whose recharge is still in progress or unsettled.
   * Format: `uint`.
   */
  in_progress: number;
  items: BatchItemReport[];
  /**
   * Cards not tried yet.
   * Format: `uint`.
   */
  pending: number;
  /**
   * Cards recharged.
   * Format: `uint`.
   */
  succeeded: number;
  /**
   * Cards in the batch.
   * Format: `uint`.
   */
  total: number;
};

/** What `group.info` returns: the top of the recharge page. */
export type GroupInfo = {
  /** The amounts the page offers (yuan). */
  amount_presets: string[];
  /** 集团可用额度, yuan. */
  available_quota: string;
  /**
   * The same in fen.
   * Format: `int64`.
   */
  available_quota_fen: number;
  /** 集团编号. */
  group_id: string;
  /** 集团名称. */
  group_name: string;
  /** 集团操作员 (the caller). */
  operator: string;
  /** The operator's display name. */
  operator_name: string;
  /** 终端编号. */
  terminal_no: string;
};

/** What moved a group's quota. */
export type LedgerKind = 'top_up' | 'reserve' | 'refund';

/** One entry of the quota ledger, with its amounts in exact decimal yuan (and fen). */
export type LedgerRow = {
  /** The change, yuan (`"-20.00"` for a reservation). */
  amount: string;
  /**
   * The same in fen.
   * Format: `int64`.
   */
  amount_fen: number;
  /** When, RFC 3339 +08:00. */
  at: string;
  /** The available quota after it, yuan. */
  balance_after: string;
  /** `top_up`, `reserve`, `refund`. */
  kind: LedgerKind;
  /** 额度充值, 充值扣减, 退款. */
  kind_label: string;
  /** Who caused it. */
  operator: string;
  /** The order or top-up it belongs to. */
  reference: string;
  /**
   * 1, 2, 3, … per group.
   * Format: `uint64`.
   */
  seq: number;
};

/** What the recharge page shows at the top. */
export type GroupView = {
  /** 集团可用额度, yuan. */
  available_quota: string;
  /**
   * The same in fen.
   * Format: `int64`.
   */
  available_quota_fen: number;
  /** 集团编号. */
  group_id: string;
  /** 集团名称. */
  group_name: string;
  /** 终端编号. */
  terminal_no: string;
};

/** What `group.login` returns. */
export type GroupLoginResult = {
  group: GroupView;
  /**
   * The session ends after this many seconds without a request (then log in again).
   * Format: `uint64`.
   */
  idle_timeout_s: number;
  operator: SessionView;
  /** Send as `Authorization: Bearer <token>`. */
  token: string;
};

/** The query period presets of the seed's query pages. */
export type Preset = 'last_7_days' | 'last_month' | 'last_3_months' | 'last_6_months';

/** The period a query covered. */
export type PeriodView = {
  /** `YYYY-MM-DD`. */
  end_date: string;
  /** 最近7天 …, or 自定义. */
  label: string;
  /** `YYYY-MM-DD`. */
  start_date: string;
};

/**
 * 充值查询's statistics: 充值成功笔数和金额, 充值失败笔数和金额 (failed, refunded or not), and
 * those still in progress.
 */
export type OrderStats = {
  /** 失败金额, yuan. */
  failure_amount: string;
  /**
   * 失败笔数 (待退款 and 已退款).
   * Format: `uint64`.
   */
  failure_count: number;
  /** 充值中 amount, yuan. */
  in_progress_amount: string;
  /**
   * 充值中 count.
   * Format: `uint64`.
   */
  in_progress_count: number;
  /** 结果待确认 amount, yuan. */
  pending_amount: string;
  /**
   * 结果待确认 count: the card may hold the money; counted apart from successes and failures.
   * Format: `uint64`.
   */
  pending_count: number;
  /** Of the failures, 已退款 amount, yuan. */
  refunded_amount: string;
  /**
   * Of the failures, 已退款 count.
   * Format: `uint64`.
   */
  refunded_count: number;
  /** 成功金额, yuan. */
  success_amount: string;
  /**
   * 成功笔数.
   * Format: `uint64`.
   */
  success_count: number;
};

/** A query page: 充值查询 ([`OrdersResult`]) or 额度充值查询 ([`TopUpsResult`]). */
export type QueryResult = {
  group_id: string;
  group_name: string;
  period: PeriodView;
  /** Newest first. */
  rows: OrderRow[];
  stats: OrderStats;
};

/** The file formats of an export. */
export type ExportFormat = 'csv' | 'xlsx';

/** An exported file. */
export type ExportResult = {
  /** `text/csv; charset=utf-8` or the XLSX media type. */
  content_type: string;
  /** The file, base64 (standard alphabet, padded). */
  data_base64: string;
  /** A file name to save it under. */
  filename: string;
  /**
   * Rows written (the headers not counted): exactly the rows of the same query.
   * Format: `uint`.
   */
  rows: number;
};

/** An amount the recharge page offers as a button. */
export type AmountPreset = {
  /** The amount as a yuan decimal string (`10.00`). */
  amount: string;
  /**
   * The amount, in fen.
   * Format: `int64`.
   */
  fen: number;
  /** What the button says (`10元`). */
  label: string;
};

/**
 * The group recharge rules (集团充值规则) as clients and flows read them: a recharge is a
 * whole multiple of `step_fen`, at least `min_fen`, and leaves the card with at most
 * `card_balance_max_fen`. The `*_yuan` fields are the same figures as short yuan text (`10`,
 * `1000`) for phrasing refusals in the rule's own words.
 */
export type GroupRules = {
  /**
   * Largest card balance after a recharge, in fen.
   * Format: `int64`.
   */
  card_balance_max_fen: number;
  /** `card_balance_max_fen` in yuan, short (`1000`). */
  card_balance_max_yuan: string;
  /**
   * Smallest recharge, in fen.
   * Format: `int64`.
   */
  min_fen: number;
  /** `min_fen` in yuan, short (`10`). */
  min_yuan: string;
  /** The amounts the recharge page offers. */
  presets: AmountPreset[];
  /**
   * A recharge is a whole multiple of this, in fen.
   * Format: `int64`.
   */
  step_fen: number;
  /** `step_fen` in yuan, short (`10`). */
  step_yuan: string;
};

/** One row of the top-up query. */
export type TopUpRow = {
  /** 转账金额, yuan. */
  amount: string;
  /** 审核员 (user name; empty until audited). */
  auditor: string;
  /** 审核员 as people read it (display name; empty until audited). */
  auditor_name: string;
  /** 银行返回流水号 (empty until paid). */
  bank_serial: string;
  /** 转账时间, RFC 3339 +08:00. */
  created_at: string;
  /** 操作员 (user name). */
  operator: string;
  /** 操作员 as people read it (display name). */
  operator_name: string;
  /** 备注. */
  remark: string;
  /** `pending`, `unknown`, `failed`, `paid`, `approved`, `rejected`. */
  status: TopUpStatus;
  /** 状态, zh-CN. */
  status_label: string;
  /** 订单编号. */
  topup_id: string;
};

/** 额度充值查询's statistics: 转账成功笔数和金额, 审核笔数和金额 (approved). */
export type TopUpStats = {
  /** 审核金额, yuan. */
  audited_amount: string;
  /**
   * 审核笔数 (approved: the quota grew).
   * Format: `uint64`.
   */
  audited_count: number;
  /** 转账成功金额, yuan. */
  transfer_success_amount: string;
  /**
   * 转账成功笔数 (the bank paid, whatever the audit).
   * Format: `uint64`.
   */
  transfer_success_count: number;
};

/** A query page: 充值查询 ([`OrdersResult`]) or 额度充值查询 ([`TopUpsResult`]). */
export type QueryResult2 = {
  group_id: string;
  group_name: string;
  period: PeriodView;
  /** Newest first. */
  rows: TopUpRow[];
  stats: TopUpStats;
};

/** A lost-card verdict as clients see it. */
export type LostCardRow = {
  card_number: string;
  /** What the card showed, for `card_contradicted` and `cleared`. */
  card_shows?: string | null;
  cleared_by?: string | null;
  cleared_reason?: string | null;
  confirmed_at?: string | null;
  confirmed_by?: string | null;
  /** The confirming auditor's display name. */
  confirmed_by_name?: string | null;
  /** The verdict: the money is on the card (`true`) or not. */
  landed: boolean;
  proposed_at: string;
  proposed_by: string;
  /** The proposer's display name. */
  proposed_by_name: string;
  reason: string;
  /**
   * `proposed` (waiting for an auditor), `watching` (confirmed; the card is checked if it is
   * ever presented), `card_confirmed`, `card_undecided` (the card can no longer show the
   * load; the verdict stands), `card_contradicted` (the card takes no load until an auditor
   * clears it) or `cleared`.
   */
  status: string;
  /** 申请中 / 已核定，监控中 / 卡片已证实 / 卡片无法证明，结论维持 / 卡片与结论不符 / 已处理. */
  status_label: string;
  txn_id: string;
};

/** What `journal.resolve` changed. */
export type Resolved = {
  /**
   * Group orders that followed the verdict.
   * Format: `uint`.
   */
  orders_settled: number;
  /**
   * ETC recharge records that followed the verdict.
   * Format: `uint`.
   */
  records_settled: number;
  /** `committed` or `not_applied`. */
  state: string;
  txn_id: string;
};

/** An undecided load as clients see it. */
export type OpenLoad = {
  /** Amount, yuan. */
  amount: string;
  /** The card's balance and online counter before the load. */
  balance_before: string;
  card_number: string;
  created_at: string;
  /**
   * From when (RFC 3339) a supervisor and an auditor may settle it without the card
   * (lost, broken or PIN-blocked card): `journal.propose_lost_card`.
   */
  lost_card_allowed_from: string;
  /** The lost-card verdict proposed on it and waiting for an auditor, if any. */
  lost_card_proposal?: LostCardRow | null;
  /** Format: `uint16`. */
  online_atc_before: number;
  reader_id: string;
  /** Why nothing could be proven, for `needs_reconciliation`. */
  reason?: string | null;
  /** `intent` (decided when the card is presented) or `needs_reconciliation` (a person decides). */
  state: string;
  txn_id: string;
};

/** A load found in a card's log after a restore. */
export type RestoredFound = {
  /** Amount, yuan. */
  amount: string;
  card_number: string;
  /** The card's date and time of the load (China time). */
  card_time: string;
  /**
   * The card's online counter before that load.
   * Format: `uint16`.
   */
  online_atc: number;
  order_id?: string | null;
  /** The item it was matched to (claims); none for loads nothing accounts for. */
  record_id?: string | null;
};

/**
 * What pays for a load, as `journal.restored` shows it: an ETC recharge record or a group
 * order.
 */
export type RestoredItem = {
  /** Amount, yuan. */
  amount: string;
  card_number: string;
  /** The group order, when an order pays. */
  order_id?: string | null;
  /** The ETC recharge record, when a record pays. */
  record_id?: string | null;
};

/**
 * `journal.restored`: whether the data was restored from a backup, and what the card checks
 * of restored mode found so far.
 */
export type Restored = {
  /** When the restored backup was made (RFC 3339). */
  backup_created_at?: string | null;
  /** The restore replaced newer data (`--force`). */
  forced: boolean;
  /**
   * Each list holds at most `list_max` items.
   * Format: `uint32`.
   */
  list_max: number;
  /**
   * Loads found on cards that were made after the backup, each with the record it settled
   * (set to 已圈存 without loading again).
   */
  loaded_since_backup: RestoredFound[];
  /** The data was restored from a backup: cards are checked before loads. */
  restored: boolean;
  /** When it was restored (RFC 3339). */
  restored_at?: string | null;
  /**
   * Loads found on cards that nothing in the restored data accounts for (for the auditor:
   * compare with the back office's records).
   */
  unaccounted: RestoredFound[];
  /** Recharge records the backup showed as not loaded whose cards have not yet been checked. */
  waiting: RestoredItem[];
};

/** An operator as the API shows it (the password hash stays inside the daemon). */
export type Operator = {
  /** When the operator was created, RFC 3339 UTC. */
  created_at: string;
  /** A disabled operator cannot log in. */
  disabled: boolean;
  /** Name shown to people, at most 64 characters. */
  display_name: string;
  /** The group a group operator acts for; `None` for every other role. */
  group_id?: string | null;
  /** When the password was last set, RFC 3339 UTC. */
  password_changed_at: string;
  /** What the operator may do. */
  role: Role;
  /** Login name: 1 to 32 of `[A-Za-z0-9_.-]`. */
  username: string;
};

/** What `reader.transmit` returns. */
export type TransmitResult = {
  /** Response data in hex (without the status word). */
  data: string;
  /** Status word, 4 hex digits. */
  sw: string;
  /** What the status word means. */
  sw_meaning: string;
};

/** A lease as clients see it. */
export type LeaseInfo = {
  /**
   * Milliseconds until the lease ends unless renewed.
   * Format: `uint64`.
   */
  expires_in_ms: number;
  /** The operator holding the reader. */
  holder: string;
  lease_id: string;
  purpose: string;
  reader_id: string;
};

/** A reader's capabilities for the wire. */
export type CapabilitiesView = {
  contact: boolean;
  contactless: boolean;
  events: boolean;
  exclusive: boolean;
  obu_channel: boolean;
  /** Format: `uint8`. */
  psam_slots: number;
};

/** Where a reader plugin (a supervised driver program) is in its life. */
export type PluginState = 'starting' | 'running' | 'backoff' | 'failed' | 'stopped';

/** The health of one configured reader plugin (`[[readers]]` with `driver = "plugin"`). */
export type PluginStatus = {
  /**
   * The wait before the next start while `backoff` or `failed`, else 0.
   * Format: `uint64`.
   */
  backoff_ms: number;
  /** Optional protocol features the plugin declared. */
  features: string[];
  /** The configured instance name: readers are `plugin:<instance>:<id>`. */
  instance: string;
  /** Why the plugin last stopped or failed to start, and what to do (English, for the log). */
  last_error?: string | null;
  /**
   * Lines the plugin sent that were not valid protocol messages.
   * Format: `uint64`.
   */
  malformed_lines: number;
  /** The plugin's own name and version from its handshake. */
  name?: string | null;
  /**
   * Readers the plugin lists now.
   * Format: `uint64`.
   */
  readers: number;
  /**
   * Starts after the first one (crashes, hangs, failed starts, restarts asked for).
   * Format: `uint64`.
   */
  restarts: number;
  state: PluginState;
  version?: string | null;
};

/** A reader as `readers.list` shows it. */
export type ReaderStatus = {
  /** Hex ATR of the card, when known. */
  atr?: string | null;
  capabilities: CapabilitiesView;
  card_present: boolean;
  driver: string;
  id: string;
  lease?: LeaseInfo | null;
  name: string;
  /** For a reader served by a vendor plugin (driver `plugin`): the plugin's health. */
  plugin?: PluginStatus | null;
};

/** A demo card as the panel shows it. */
export type SimCardView = {
  /** The purse balance in yuan (`"100.00"`); none for an OBU. */
  balance?: string | null;
  /** `etc`, `etc_sm4`, `city` or `obu`. */
  card: string;
  /** The card number (the contract serial for an OBU). */
  card_number: string;
  label: string;
  /** Pulled out in the middle of a load and not inserted since. */
  pulled_mid_load: boolean;
};

/** A simulated reader as the panel shows it. */
export type SimReaderView = {
  /** The demo cards this reader takes (`obu` for an OBU programmer, the cards otherwise). */
  accepts: string[];
  /** The card in the reader, if any. */
  card?: SimCardView | null;
  /** 接触式读卡器, 非接触读卡器 or OBU 发行器. */
  label: string;
  /** The card will be pulled right after it executes the next CREDIT FOR LOAD. */
  pull_armed: boolean;
  reader_id: string;
};

/** The panel: the readers and the cards outside them. */
export type SimView = {
  /** Demo cards in no reader. */
  outside: SimCardView[];
  readers: SimReaderView[];
};

/** `sim.carry`'s answer. */
export type SimCarried = {
  /** The card as it is now (balances, counters, log), to give to another site's `sim.bring`. */
  card_json: string;
  /** This site's panel without it. */
  view: SimView;
};

/** What `system.version` returns. */
export type Version = {
  api_version: string;
  name: string;
  version: string;
};

/** A word of the vocabulary: its wire code and its zh-CN label. */
export type Term = {
  /** The code on the wire (`teller`, `succeeded`, `last_7_days` …). */
  code: string;
  /** The zh-CN label tellers read. */
  label: string;
};

/** A plate colour: the GB/T 38444 code ETC cards store and its zh-CN name. */
export type PlateColourTerm = {
  /**
   * The code on the card and on the wire.
   * Format: `uint16`.
   */
  code: number;
  /** The zh-CN name. */
  label: string;
};

/**
 * What `system.vocabulary` returns: every code a client shows, with its zh-CN label, in the
 * order pages offer them.
 */
export type Vocabulary = {
  /** Where a group recharge order stands. */
  order_statuses: Term[];
  /** Standard plate colours. */
  plate_colours: PlateColourTerm[];
  /** The query period presets (最近7天 …). */
  query_periods: Term[];
  /** Operator roles. */
  roles: Term[];
  /** Where a quota top-up stands. */
  topup_statuses: Term[];
};

/** Every method of the API: its named params and its result. */
export interface Methods {
  /** Audit records, oldest first, after a sequence number. */
  'audit.list': {
    params: {
      /**
       * Return records after this sequence number (oldest first).
       * Format: `uint64`.
       */
      after_seq?: number | null;
      /**
       * At most this many records (default 100, at most 500).
       * Format: `uint`.
       */
      limit?: number | null;
    };
    result: AuditRecord[];
  };
  /** Verify the audit log's hash chain. */
  'audit.verify': {
    params: Record<string, never>;
    result: AuditVerifyResult;
  };
  /** Change the logged-in operator's password (原密码, 新密码, 确认密码); other sessions end. */
  'auth.change_password': {
    params: {
      confirm_password: string;
      new_password: string;
      old_password: string;
    };
    result: Done;
  };
  /** Log in with user name and password; returns a bearer token. */
  'auth.login': {
    params: {
      password: string;
      username: string;
    };
    result: LoginResult;
  };
  /** End the current session. */
  'auth.logout': {
    params: Record<string, never>;
    result: Done;
  };
  /** The logged-in operator, with the rule a new password must follow. */
  'auth.whoami': {
    params: Record<string, never>;
    result: WhoAmI;
  };
  /**
   * Read the purse balance of the card in a reader (one GET BALANCE while the application is
   * selected).
   */
  'card.balance': {
    params: {
      reader_id: string;
    };
    result: CardBalance;
  };
  /**
   * Read the card in a reader: type, card number, plate, balance, validity (SELECT, READ BINARY,
   * GET BALANCE: no PIN, no load). With online_counter, also the online counter (ETC: VERIFY PIN
   * and a probing INITIALIZE FOR LOAD of 1 fen).
   */
  'card.summary': {
    params: {
      /**
       * Also read the online (load) counter. For an ETC card this presents the configured PIN
       * (VERIFY PIN) and sends a probing INITIALIZE FOR LOAD of 1 fen, which changes nothing on
       * the card. Off by default: a plain summary presents no PIN and starts no load.
       */
      online_counter?: boolean;
      reader_id: string;
    };
    result: CardSummary;
  };
  /**
   * 充值: record a payment into a vehicle's account; creates a 未圈存 record for its card in service.
   */
  'etc.recharge': {
    params: {
      /** 充值金额, decimal yuan string (`"200.00"`). */
      amount: string;
      /** Where it was paid; default 银行柜台. */
      channel?: string | null;
      plate: string;
      /** Format: `uint16`. */
      plate_colour: number;
    };
    result: RecordView;
  };
  /**
   * What the card (on `reader_id`) and the journal prove about a record's money: landed, not landed
   * or unknown. A record the proof contradicts is corrected.
   */
  'etc.records.evidence': {
    params: {
      /** The reader holding the record's card; without it only the journal speaks. */
      reader_id?: string | null;
      record_id: string;
    };
    result: EvidenceResult;
  };
  /** A recharge record with its history. */
  'etc.records.get': {
    params: {
      record_id: string;
    };
    result: RecordView;
  };
  /**
   * 修改圈存状态: set a record back to 未圈存 for 二次圈存. With the card on `reader_id`, allowed only when the
   * card proves the load did not land; refused with the evidence when it did. Without the card:
   * supervisors only, with a reason.
   */
  'etc.records.mark_not_loaded': {
    params: {
      /** The reader holding the record's card (the card decides); without it, supervisors only. */
      reader_id?: string | null;
      /** Why (required for a supervisor acting without proof from the card). */
      reason?: string | null;
      record_id: string;
    };
    result: MarkResult;
  };
  /**
   * 充值记录: a vehicle's recharge records by plate and colour, optionally within a time range, newest
   * first, paged.
   */
  'etc.records.query': {
    params: {
      /** Earliest 充值时间, inclusive: `YYYY-MM-DD` (from 00:00:00 China time) or RFC 3339. */
      from?: string | null;
      /**
       * Page, from 1 (default 1).
       * Format: `uint32`.
       */
      page?: number | null;
      /**
       * Records per page, 1 to 100 (default 20).
       * Format: `uint32`.
       */
      page_size?: number | null;
      plate: string;
      /** Format: `uint16`. */
      plate_colour: number;
      /** Latest 充值时间, inclusive: `YYYY-MM-DD` (to 23:59:59 China time) or RFC 3339. */
      to?: string | null;
    };
    result: RecordPage;
  };
  /**
   * A supervisor settles a 待核对 record as loaded or not, with a reason; with the card on
   * `reader_id`, the card's evidence must not contradict the verdict.
   */
  'etc.records.resolve': {
    params: {
      /** The person's verdict: the money is on the card (`true`) or not (`false`). */
      loaded: boolean;
      /**
       * The reader holding the card: when given, the card's evidence must not contradict the
       * verdict.
       */
      reader_id?: string | null;
      /** Why; required. */
      reason: string;
      record_id: string;
    };
    result: RecordView;
  };
  /** A vehicle account by plate number and plate colour. */
  'etc.vehicles.get': {
    params: {
      /** 车牌号, e.g. `陕A12345`. */
      plate: string;
      /**
       * 车牌颜色 code (0 蓝色, 1 黄色, 2 黑色, 3 白色, 4 渐变绿色, 5 黄绿双拼色, 6 蓝白渐变色,
       * 11 绿色, 12 红色).
       * Format: `uint16`.
       */
      plate_colour: number;
    };
    result: VehicleView;
  };
  /**
   * Create or replace a vehicle account (plate, colour, cards, owner, class, OBU contract serial,
   * vehicle details for OBU issuance).
   */
  'etc.vehicles.upsert': {
    params: {
      vehicle: VehicleInput;
    };
    result: VehicleView;
  };
  /**
   * Reader, card and lease events after `since`, waiting up to `wait_ms` for the first one (for
   * HTTP-only clients).
   */
  'events.poll': {
    params: {
      /**
       * At most this many events (default 100, at most 256).
       * Format: `uint`.
       */
      limit?: number | null;
      /**
       * The `next_since` of the previous poll (0 for the start).
       * Format: `uint64`.
       */
      since?: number;
      /**
       * Wait up to this long for the first event (default 0, at most 25000).
       * Format: `uint64`.
       */
      wait_ms?: number | null;
    };
    result: PollResult;
  };
  /**
   * WebSocket only: receive reader, card and lease events as `events.event` notifications; end with
   * `events.unsubscribe`.
   */
  'events.subscribe': {
    params: Record<string, never>;
    result: Event;
  };
  /** Answer the run's pending question (confirm or choose). */
  'flows.answer': {
    params: {
      /** `true`/`false` for a confirmation, one of the choices for a choice. */
      answer: Answer;
      /** Format: `uint32`. */
      prompt_id: number;
      run_id: string;
    };
    result: RunRecord;
  };
  /** Cancel a run in progress (a load already sent to the card is settled by the journal). */
  'flows.cancel': {
    params: {
      run_id: string;
    };
    result: RunRecord;
  };
  /**
   * A run's events after `since`, waiting up to `wait_ms` for news (HTTP-only clients follow runs
   * with it).
   */
  'flows.events': {
    params: {
      run_id: string;
      /**
       * Return events with a larger sequence number (0 for all).
       * Format: `uint64`.
       */
      since?: number;
      /**
       * Wait up to this long for something new when there is nothing yet (at most 25000).
       * Format: `uint64`.
       */
      wait_ms?: number | null;
    };
    result: RunEvents;
  };
  /** A run: state, pending question, result or failure, events. */
  'flows.get': {
    params: {
      run_id: string;
    };
    result: RunRecord;
  };
  /** The flows you may start, with their parameter schemas. */
  'flows.list': {
    params: Record<string, never>;
    result: FlowInfo[];
  };
  /**
   * Start a flow with a client-chosen idempotency key; re-sending the same start returns the same
   * run.
   */
  'flows.start': {
    params: {
      flow: string;
      /** Chosen by the client, saved before sending, reused on every retry of this start. */
      idempotency_key: string;
      params?: unknown;
      /** The reader the flow works on, for flows that use a card. */
      reader_id?: string | null;
    };
    result: RunRecord;
  };
  /**
   * WebSocket only: receive a run's events as `flows.event` notifications until it finishes; end
   * with `flows.unsubscribe`.
   */
  'flows.subscribe': {
    params: {
      run_id: string;
    };
    result: RunEvent;
  };
  /**
   * The card evidence of an order: did its load land (from the journal, decided from the card)?
   * With reader_id, the card on that reader is read too.
   */
  'group.audit.evidence': {
    params: {
      order_id: string;
      /** A reader holding the order's card: the card is read too (its proof of the load). */
      reader_id?: string | null;
    };
    result: Evidence2;
  };
  /**
   * What waits for an auditor: paid transfers to approve, failed recharges with their card
   * evidence.
   */
  'group.audit.pending': {
    params: Record<string, never>;
    result: AuditPending;
  };
  /**
   * Return a failed order's quota; refused when the card shows the load landed or is unsettled;
   * never twice.
   */
  'group.audit.refund': {
    params: {
      order_id: string;
      reason: string;
    };
    result: OrderRow;
  };
  /** Resolve a failed order as succeeded when the card shows its load landed. */
  'group.audit.resolve': {
    params: {
      order_id: string;
      reason: string;
    };
    result: OrderRow;
  };
  /** Approve (the quota grows) or reject a paid transfer; each transfer is decided once. */
  'group.audit.topup': {
    params: {
      /** `true` approves (the quota grows), `false` rejects. */
      approve: boolean;
      reason: string;
      topup_id: string;
    };
    result: TopUpResult;
  };
  /**
   * Batch recharge: a queue of cards and amounts, run card by card with the group.batch_recharge
   * flow.
   */
  'group.batch.create': {
    params: {
      items: BatchItemParams[];
    };
    result: BatchReport;
  };
  /** A batch with each card's outcome (the per-card report). */
  'group.batch.get': {
    params: {
      batch_id: string;
    };
    result: BatchReport;
  };
  /** The recharge page's header: group name, terminal number, available quota, operator. */
  'group.info': {
    params: {
      group_id?: string | null;
    };
    result: GroupInfo;
  };
  /** The group's quota ledger (append-only), oldest first. */
  'group.ledger': {
    params: {
      /**
       * Entries after this sequence number (0 for all).
       * Format: `uint64`.
       */
      after_seq?: number;
      group_id?: string | null;
      /**
       * At most this many (default and maximum 1000).
       * Format: `uint`.
       */
      limit?: number | null;
    };
    result: LedgerRow[];
  };
  /** 集团充值登录: log into a group's site; an operator who is not of that group gets 用户和密码错误. */
  'group.login': {
    params: {
      /** 集团编号 of the group site the operator logs into. */
      group_id: string;
      password: string;
      username: string;
    };
    result: GroupLoginResult;
  };
  /**
   * 充值查询: the group's card recharges in a period (preset or dates) with success and failure
   * statistics.
   */
  'group.orders': {
    params: {
      end_date?: string | null;
      group_id?: string | null;
      preset?: Preset | null;
      start_date?: string | null;
    };
    result: QueryResult;
  };
  /** Export exactly the rows of 充值查询 as CSV or XLSX (zh-CN headers), base64. */
  'group.orders.export': {
    params: {
      end_date?: string | null;
      format: ExportFormat;
      group_id?: string | null;
      preset?: Preset | null;
      start_date?: string | null;
    };
    result: ExportResult;
  };
  /**
   * The group recharge rules (step, minimum, card balance ceiling, in fen and short yuan) and the
   * amounts the recharge page offers.
   */
  'group.rules': {
    params: Record<string, never>;
    result: GroupRules;
  };
  /**
   * 额度充值: transfer a whole number of yuan to the card company through the payment gateway; the
   * quota grows after an auditor approves. A declined transfer is PaymentDeclined, an unanswered
   * one PaymentUnknown (data.detail.topup_id to ask again).
   */
  'group.topup': {
    params: {
      /** Decimal yuan string, a whole number (`"5000"` or `"5000.00"`). */
      amount: string;
      remark?: string;
    };
    result: TopUpResult;
  };
  /** A top-up's status; asks the bank again when its answer was lost. */
  'group.topup_status': {
    params: {
      topup_id: string;
    };
    result: TopUpResult;
  };
  /** 额度充值查询: the group's transfers in a period with transfer and audit statistics. */
  'group.topups': {
    params: {
      end_date?: string | null;
      group_id?: string | null;
      preset?: Preset | null;
      start_date?: string | null;
    };
    result: QueryResult2;
  };
  /** Export exactly the rows of 额度充值查询 as CSV or XLSX (zh-CN headers), base64. */
  'group.topups.export': {
    params: {
      end_date?: string | null;
      format: ExportFormat;
      group_id?: string | null;
      preset?: Preset | null;
      start_date?: string | null;
    };
    result: ExportResult;
  };
  /** Every group with its quota. */
  'groups.list': {
    params: Record<string, never>;
    result: GroupView[];
  };
  /** Create a group (no quota) or change its name or terminal number. */
  'groups.upsert': {
    params: {
      /** 集团编号. */
      group_id: string;
      /** 集团名称. */
      name: string;
      /** 终端编号. */
      terminal_no: string;
    };
    result: GroupView;
  };
  /**
   * An auditor records how a card that contradicted its lost-card verdict was dealt with; the card
   * may take loads again.
   */
  'journal.clear_watch': {
    params: {
      /** How the difference between the verdict and the card was dealt with; required. */
      reason: string;
      txn_id: string;
    };
    result: LostCardRow;
  };
  /**
   * An auditor (not the proposer) confirms a proposed lost-card verdict: the load is settled, its
   * ETC records and group orders follow, and the card goes on the watch list.
   */
  'journal.confirm_lost_card': {
    params: {
      /** The verdict being confirmed: must be the proposed one. */
      landed: boolean;
      txn_id: string;
    };
    result: Resolved;
  };
  /**
   * Lost-card verdicts: proposed, confirmed and watched, and what each card showed when it came
   * back.
   */
  'journal.lost_cards': {
    params: Record<string, never>;
    result: LostCardRow[];
  };
  /**
   * Loads not yet decided: `intent` (decided when the card is presented) and `needs_reconciliation`
   * (a person decides with journal.resolve).
   */
  'journal.open': {
    params: Record<string, never>;
    result: OpenLoad[];
  };
  /**
   * A supervisor proposes a verdict (landed or not, with a reason) on an unsettled load whose card
   * is lost, broken or PIN-blocked, after the waiting period; an auditor confirms it.
   */
  'journal.propose_lost_card': {
    params: {
      /** The proposed verdict: the money is on the card (`true`) or not (`false`). */
      landed: boolean;
      /**
       * Why, and how the card is known to be lost, broken or PIN-blocked; required (at most 500
       * characters).
       */
      reason: string;
      txn_id: string;
    };
    result: LostCardRow;
  };
  /**
   * Record a person's verdict on a load awaiting reconciliation (landed or not, with a reason); the
   * ETC records and group orders of that load follow it.
   */
  'journal.resolve': {
    params: {
      /** The person's verdict: the money is on the card (`true`) or not (`false`). */
      landed: boolean;
      /** Why (what was compared: the card's balance, its log, the customer's receipt); required. */
      reason: string;
      txn_id: string;
    };
    result: Resolved;
  };
  /**
   * Restored mode (the data was restored from a backup): recharge records waiting for their card's
   * check, loads found on cards that were made after the backup (their records were set to 已圈存
   * without loading again), and loads nothing in the restored data accounts for.
   */
  'journal.restored': {
    params: Record<string, never>;
    result: Restored;
  };
  /**
   * A supervisor clears a recharge record whose card's log could not prove it was not loaded after
   * the restored backup, after comparing the card with the back office's records, with a reason;
   * the record may then be loaded.
   */
  'journal.restored_clear': {
    params: {
      card_number: string;
      /** How the card and the back office's records were compared; required. */
      reason: string;
      record_id: string;
    };
    result: Restored;
  };
  /** Create an operator with a role (and a group for group operators). */
  'operators.create': {
    params: {
      /** See [`Operator::display_name`]. */
      display_name: string;
      /** See [`Operator::group_id`]. */
      group_id?: string | null;
      /** The initial password (never serialised). */
      password: string;
      /** See [`Operator::role`]. */
      role: Role;
      /** See [`Operator::username`]. */
      username: string;
    };
    result: Operator;
  };
  /** All operators. */
  'operators.list': {
    params: Record<string, never>;
    result: Operator[];
  };
  /** Set an operator's password (their sessions end). */
  'operators.reset_password': {
    params: {
      new_password: string;
      username: string;
    };
    result: Done;
  };
  /** Disable or re-enable an operator; a disabled operator cannot log in. */
  'operators.set_disabled': {
    params: {
      disabled: boolean;
      username: string;
    };
    result: Operator;
  };
  /** Change an operator's role (and group, for group operators); their sessions end. */
  'operators.set_role': {
    params: {
      /** The group, for a group operator only. */
      group_id?: string | null;
      role: Role;
      username: string;
    };
    result: Operator;
  };
  /** Send one raw APDU (administrators only; audited). */
  'reader.transmit': {
    params: {
      /** The command APDU in hex, e.g. `805C000204`. */
      apdu: string;
      reader_id: string;
    };
    result: TransmitResult;
  };
  /** Hold a reader for a flow, for a bounded time; others find it busy. */
  'readers.lease': {
    params: {
      /**
       * How long to hold the reader (default `limits.lease_ms_default`, at most
       * `limits.lease_ms_max`).
       * Format: `uint64`.
       */
      duration_ms?: number | null;
      /** What the reader is held for, shown to others who find it busy. */
      purpose?: string | null;
      reader_id: string;
    };
    result: LeaseInfo;
  };
  /** Readers with driver, capabilities, card presence and lease. */
  'readers.list': {
    params: Record<string, never>;
    result: ReaderStatus[];
  };
  /** The configured reader plugins with their health, including plugins with no reader now. */
  'readers.plugins': {
    params: Record<string, never>;
    result: PluginStatus[];
  };
  /** Release a lease you hold. */
  'readers.release': {
    params: {
      lease_id: string;
    };
    result: Done;
  };
  /** Extend a lease you hold. */
  'readers.renew': {
    params: {
      /** Format: `uint64`. */
      duration_ms?: number | null;
      lease_id: string;
    };
    result: LeaseInfo;
  };
  /**
   * Kill a reader plugin and start it again at once, skipping its backoff (administrators;
   * audited).
   */
  'readers.restart_plugin': {
    params: {
      /** The plugin's instance name (`name` in its `[[readers]]` options). */
      instance: string;
    };
    result: PluginStatus;
  };
  /** This API's OpenRPC document. */
  'rpc.discover': {
    params: Record<string, never>;
    result: Record<string, unknown>;
  };
  /**
   * Simulated cards only: put a card another site's sim.carry gave into an empty simulated reader.
   */
  'sim.bring': {
    params: {
      /** A card another site's `sim.carry` gave (at most [`CARRIED_CARD_BYTES_MAX`] bytes). */
      card_json: string;
      reader_id: string;
    };
    result: SimView;
  };
  /**
   * Simulated cards only: take a demo card from outside the readers away from this site, as JSON
   * for another site's sim.bring (a customer carrying the card to another counter).
   */
  'sim.carry': {
    params: {
      /** A demo card outside the readers (`etc`, `etc_sm4`, `city` or `obu`). */
      card: string;
    };
    result: SimCarried;
  };
  /**
   * Demo only: insert one of the demo cards (etc, etc_sm4, city, obu) into an empty simulated
   * reader (插入卡片).
   */
  'sim.insert': {
    params: {
      /** `etc`, `etc_sm4`, `city` or `obu` (see `sim.readers`). */
      card: string;
      reader_id: string;
    };
    result: SimView;
  };
  /**
   * Demo only: pull the reader's card right after it executes its next CREDIT FOR LOAD (圈存中拔卡), or
   * with before_write just before it (写卡前拔卡: a 写卡失败); put it back with sim.insert to see the load
   * settled.
   */
  'sim.pull_during_next_load': {
    params: {
      /**
       * Pull the card just before the CREDIT FOR LOAD reaches it (写卡前拔卡: nothing is written,
       * a 写卡失败 the card later proves) instead of right after it executes (圈存中拔卡: the money
       * is on the card, its answer lost). Default false.
       */
      before_write?: boolean;
      reader_id: string;
    };
    result: SimView;
  };
  /**
   * Demo only (`cardd --demo`): the simulated readers, their cards and the demo cards outside them.
   */
  'sim.readers': {
    params: Record<string, never>;
    result: SimView;
  };
  /** Demo only: take the card out of a simulated reader (取出卡片). */
  'sim.remove': {
    params: {
      reader_id: string;
    };
    result: SimView;
  };
  /** Demo only: take the reader's card out and insert another demo card (更换卡片). */
  'sim.swap': {
    params: {
      /** `etc`, `etc_sm4`, `city` or `obu` (see `sim.readers`). */
      card: string;
      reader_id: string;
    };
    result: SimView;
  };
  /** The daemon's name and version. */
  'system.version': {
    params: Record<string, never>;
    result: Version;
  };
  /**
   * Every code clients show with its zh-CN label: roles, plate colours, order and top-up statuses,
   * query periods.
   */
  'system.vocabulary': {
    params: Record<string, never>;
    result: Vocabulary;
  };
}

/** A method's name. */
export type Method = keyof Methods;
/** The named params of method `M`. */
export type Params<M extends Method> = Methods[M]['params'];
/** What method `M` returns. */
export type Result<M extends Method> = Methods[M]['result'];
