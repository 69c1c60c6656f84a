/** A table's header row from its column titles ('' for a column without a title, e.g. of buttons). */
export function Head({ cols }: { cols: readonly string[] }) {
  return (
    <thead>
      <tr>
        {cols.map((c, i) =>
          // Titles may repeat or be empty: the position is the column's identity.
          // biome-ignore lint/suspicious/noArrayIndexKey: columns never reorder
          c === '' ? <th key={i} /> : <th key={i}>{c}</th>,
        )}
      </tr>
    </thead>
  );
}
