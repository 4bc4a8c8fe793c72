// The back office's JSON-RPC methods (daemon/host/src/backoffice/pages/*.rs): params and
// results, as the pages use them.

export interface Me {
  username: string;
  display_name: string;
  role: 'admin' | 'auditor' | 'supervisor';
  role_label: string;
  methods: string[];
}

export interface LoginResult {
  token: string;
  username: string;
  display_name: string;
  role: string;
  role_label: string;
  idle_ms: number;
}

export interface PendingTopUp {
  topup_id: string;
  group_id: string;
  group_name: string | null;
  available: string | null;
  amount: string;
  operator: string;
  remark: string;
  bank_serial: string | null;
  status_label: string;
  created_at: string;
}

export interface Evidence {
  verdict: 'landed' | 'not_landed' | 'unknown';
  state: 'booked' | 'released' | 'authorized' | 'reconcile' | 'none';
  message: string;
  site_id: string | null;
  authorized_at: string | null;
  settled_at: string | null;
  settled_by: string | null;
  tac: string | null;
  balance_before: string | null;
  balance_after: string | null;
  declared_by: string[];
}

export interface FailedOrder {
  order_id: string;
  group_id: string;
  group_name: string | null;
  card_number: string;
  amount: string;
  operator: string;
  status_label: string;
  failure: string | null;
  created_at: string;
  updated_at: string;
  txn_id: string;
  evidence: Evidence;
  may_refund: boolean;
  may_resolve: boolean;
  refund_refusal: string | null;
}

export interface ReviewVerdict {
  landed: boolean;
  reason: string;
  proposed_by: string;
  proposed_at: string;
  state: 'proposed' | 'rejected' | 'confirmed';
  decided_by: string | null;
  decided_at: string | null;
  card_check: 'waiting' | 'agreed' | 'contradicted';
  card_evidence: string | null;
}

export interface ReviewItem {
  txn_id: string;
  site_id: string;
  card_number: string;
  amount: string;
  online_atc: number;
  balance_before: string;
  balance_if_landed: string;
  funding_kind: 'etc_record' | 'group_order';
  funding_id: string;
  state: 'authorized' | 'reconcile';
  authorized_at: string;
  why: string | null;
  decidable: boolean;
  decidable_at: string;
  verdict: ReviewVerdict | null;
}

export interface RecordRow {
  record_id: string;
  card_number: string;
  plate: string;
  amount: string;
  status: 'not_loaded' | 'loading' | 'loaded' | 'needs_reconciliation';
  status_label: string;
  channel: string;
  recharged_at: string;
  loaded_at: string | null;
  balance_before: string | null;
  balance_after: string | null;
  site_id: string | null;
}

export interface OperatorRow {
  username: string;
  display_name: string;
  role: string;
  role_label: string;
  group_id: string | null;
  disabled: boolean;
  created_at: string;
}

export interface SiteRow {
  site_id: string;
  enabled: boolean;
  cert_fingerprint: string;
  updated_at: string;
  last_seen_at: string | null;
  outbox_pending: number | null;
}

export interface AuditRecord {
  chain: string;
  seq: number;
  at: string;
  actor: string;
  action: string;
  target: string | null;
  detail: string;
  outcome: string;
  hash: string;
}

export interface VerifyResult {
  intact: boolean;
  records?: number;
  chains?: number;
  chain?: string;
  seq?: number;
  reason?: string;
  message: string;
}

export interface Api {
  'auth.login': { params: { username: string; password: string }; result: LoginResult };
  'auth.logout': { params: {}; result: { logged_out: boolean } };
  'auth.whoami': { params: {}; result: Me };
  'auth.change_password': {
    params: { old_password: string; new_password: string };
    result: { changed: boolean };
  };
  'topups.pending': { params: {}; result: PendingTopUp[] };
  'topups.audit': {
    params: { topup_id: string; approve: boolean; reason: string };
    result: { topup_id: string; group_id: string; status_label: string; available: string | null };
  };
  'refunds.pending': { params: {}; result: FailedOrder[] };
  'refunds.refund': {
    params: { order_id: string; reason: string };
    result: { order_id: string; status_label: string; available: string | null };
  };
  'refunds.resolve': {
    params: { order_id: string; reason: string };
    result: { order_id: string; status_label: string };
  };
  'review.pending': { params: {}; result: ReviewItem[] };
  'review.propose': {
    params: { txn_id: string; landed: boolean; reason: string };
    result: ReviewItem;
  };
  'review.decide': { params: { txn_id: string; confirm: boolean }; result: ReviewItem };
  'records.query': {
    params: { card_number?: string; plate?: string; colour?: number };
    result: { records: RecordRow[]; total: number; shown_max: number };
  };
  'operators.list': {
    params: {};
    result: { operators: OperatorRow[]; roles: { role: string; label: string }[] };
  };
  'operators.create': {
    params: {
      username: string;
      display_name: string;
      role: string;
      group_id: string | null;
      password: string;
    };
    result: { username: string; role_label: string };
  };
  'operators.set_disabled': {
    params: { username: string; disabled: boolean };
    result: { username: string; disabled: boolean };
  };
  'operators.reset_password': {
    params: { username: string; password: string };
    result: { username: string };
  };
  'sites.list': { params: {}; result: SiteRow[] };
  'sites.enrol': {
    params: { site_id: string; cert_pem: string };
    result: { site_id: string; cert_fingerprint: string };
  };
  'sites.set_enabled': {
    params: { site_id: string; enabled: boolean };
    result: { site_id: string; enabled: boolean };
  };
  'audit.list': {
    params: { chain?: string; page?: number };
    result: { records: AuditRecord[]; page: number; more: boolean; page_size: number };
  };
  'audit.verify': { params: {}; result: VerifyResult };
}
