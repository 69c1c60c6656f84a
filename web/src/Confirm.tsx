/** An in-page confirmation dialog for destructive or state-changing actions. */
export interface ConfirmRequest {
  title: string;
  body: string;
  action: string;
  run: () => Promise<void>;
}

export function Confirm({
  req,
  busy,
  error,
  onCancel,
  onConfirm,
}: {
  req: ConfirmRequest;
  busy: boolean;
  error: string | null;
  onCancel: () => void;
  onConfirm: () => void;
}) {
  return (
    <div className="modal-backdrop">
      <div className="modal" role="dialog" aria-modal="true" aria-label={req.title}>
        <h3>{req.title}</h3>
        <p>{req.body}</p>
        {error && <p className="error">{error}</p>}
        <div className="actions">
          <button type="button" onClick={onCancel} disabled={busy}>
            Cancel
          </button>
          <button type="button" className="danger" onClick={onConfirm} disabled={busy} data-testid="confirm">
            {busy ? 'Working…' : req.action}
          </button>
        </div>
      </div>
    </div>
  );
}
