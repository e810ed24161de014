// Bulk invite: parse pasted or uploaded CSV rows `first_name,last_name,email[,questions_total]`
// (header optional) and say, per line, what is wrong before anything is sent. Pure; unit-tested
// in web/test/csv.test.mjs.
//
// The parser follows RFC 4180 (quoted fields, "" inside quotes, CRLF or LF, a byte-order mark)
// and is lenient where spreadsheets are sloppy: blank lines are skipped, fields are trimmed.
// The checks repeat the contract's field rules (names 1–200 characters without control or
// bidirectional-override characters, an email address, questions 1–10,000) so a bad row is
// reported with its line number; the server has the last word on each row it is sent.

export const MAX_ROWS = 5000;
const NAME_MAX = 200;
const QUESTIONS_MAX = 10000;
// C0, DEL, C1 controls and the bidirectional overrides/isolates of the contract (v2).
// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

/**
 * Split CSV text into records. Each record is {line, fields}; `line` is the 1-based line its
 * first field starts on. An unterminated quote ends the text (its record is still returned,
 * flagged `open: true`).
 */
export function parseCsv(text) {
  const src = String(text || '').replace(/^\uFEFF/, '');
  const records = [];
  let fields = [];
  let field = '';
  let quoted = false; // inside a quoted field
  let wasQuoted = false; // this field was quoted (keep its spaces)
  let line = 1;
  let startLine = 1;
  const endField = () => {
    fields.push(wasQuoted ? field : field.trim());
    field = '';
    wasQuoted = false;
  };
  const endRecord = () => {
    endField();
    if (!(fields.length === 1 && fields[0] === '')) records.push({ line: startLine, fields });
    fields = [];
  };
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (quoted) {
      if (c === '"') {
        if (src[i + 1] === '"') {
          field += '"';
          i++;
        } else {
          quoted = false;
        }
      } else {
        if (c === '\n') line++;
        field += c;
      }
      continue;
    }
    if (c === '"' && field.trim() === '') {
      quoted = true;
      wasQuoted = true;
      field = '';
    } else if (c === ',') {
      endField();
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && src[i + 1] === '\n') i++;
      endRecord();
      line++;
      startLine = line;
    } else {
      field += c;
    }
  }
  if (quoted) {
    endField();
    records.push({ line: startLine, fields, open: true });
  } else if (field !== '' || fields.length > 0) {
    endRecord();
  }
  return records;
}

/** An address by its shape, as the server checks it. */
export function validEmail(email) {
  const at = email.indexOf('@');
  if (at <= 0 || at !== email.lastIndexOf('@') || email.length > 254) return false;
  const domain = email.slice(at + 1);
  return domain.length > 0 && !domain.startsWith('.') && !domain.endsWith('.') &&
    !domain.includes('..') && !/[\s[\]()<>,;:\\"]/.test(domain) && !/\s/.test(email) &&
    !FORBIDDEN.test(email);
}

function looksLikeHeader(fields) {
  return fields.length >= 3 && /e-?mail/i.test(fields[2]) && !validEmail(fields[2]);
}

function nameProblem(value, what) {
  const n = [...value].length;
  if (n === 0) return `the ${what} is empty`;
  if (n > NAME_MAX) return `the ${what} is longer than ${NAME_MAX} characters`;
  if (FORBIDDEN.test(value)) return `the ${what} holds a control or text-direction character`;
  return null;
}

/**
 * Turn CSV text into invitations and refusals.
 * @returns {{rows: {line: number, first_name: string, last_name: string, email: string, questions_total?: number}[],
 *            errors: {line: number, reason: string}[], header: boolean}}
 * Reasons are sentences ready to show. Duplicate emails (case-insensitive) after the first are
 * refused; more than `maxRows` rows are refused as a whole line each.
 */
export function inviteRows(text, { maxRows = MAX_ROWS } = {}) {
  const records = parseCsv(text);
  const rows = [];
  const errors = [];
  const seen = new Map(); // lower-cased email -> line
  let header = false;
  records.forEach((rec, i) => {
    const { line, fields } = rec;
    if (i === 0 && looksLikeHeader(fields)) {
      header = true;
      return;
    }
    const fail = (reason) => errors.push({ line, reason: `Line ${line}: ${reason}.` });
    if (rec.open) return fail('a quoted field is never closed');
    // Trailing empty fields (a spreadsheet's extra commas) are not columns.
    while (fields.length > 3 && fields[fields.length - 1] === '') fields.pop();
    if (fields.length < 3) return fail('expected first name, last name and email, separated by commas');
    if (fields.length > 4) return fail(`expected at most 4 fields, found ${fields.length}`);
    const [first, last, email, total] = fields;
    const problem = nameProblem(first, 'first name') || nameProblem(last, 'last name');
    if (problem) return fail(problem);
    if (!validEmail(email)) return fail(`“${email}” is not an email address`);
    let questions;
    if (total !== undefined && total !== '') {
      if (!/^\d+$/.test(total) || Number(total) < 1 || Number(total) > QUESTIONS_MAX) {
        return fail(`the number of questions must be a whole number from 1 to ${QUESTIONS_MAX.toLocaleString('en')}`);
      }
      questions = Number(total);
    }
    const key = email.toLowerCase();
    if (seen.has(key)) return fail(`${email} is already on line ${seen.get(key)}`);
    if (rows.length >= maxRows) return fail(`more than ${maxRows.toLocaleString('en')} rows; import the rest separately`);
    seen.set(key, line);
    const row = { line, first_name: first, last_name: last, email };
    if (questions !== undefined) row.questions_total = questions;
    rows.push(row);
  });
  return { rows, errors, header };
}
