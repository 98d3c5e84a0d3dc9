// Sort a table.sortable by the header a person clicks (or focuses and presses Enter).
// Each cell may carry data-sort (the value to sort by); a header with data-type="num"
// sorts numerically, blanks last. A second click reverses the order.
"use strict";

function sortKey(row, column, numeric) {
  const cell = row.cells[column];
  const value = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent;
  if (!numeric) return value;
  const number = parseFloat(value);
  return Number.isNaN(number) ? null : number;
}

function sortBy(table, column, header) {
  const numeric = header.dataset.type === "num";
  const ascending = header.getAttribute("aria-sort") !== "ascending";
  for (const other of header.parentNode.cells) other.removeAttribute("aria-sort");
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const sign = ascending ? 1 : -1;
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = sortKey(a, column, numeric);
    const y = sortKey(b, column, numeric);
    if (x === y) return 0;
    if (x === null) return 1;
    if (y === null) return -1;
    if (numeric) return sign * (x - y);
    return sign * String(x).localeCompare(String(y), undefined, { numeric: true });
  });
  body.append(...rows);
}

for (const table of document.querySelectorAll("table.sortable")) {
  Array.from(table.tHead.rows[0].cells).forEach((header, column) => {
    header.tabIndex = 0;
    header.title = "Sort by this column";
    header.addEventListener("click", () => sortBy(table, column, header));
    header.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        sortBy(table, column, header);
      }
    });
  });
}
