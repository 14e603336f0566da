// A small YAML serializer for JSON documents (block style, kubectl-like): enough to show a
// passport; strings are quoted (as JSON, a subset of YAML's double-quoted style) whenever a
// plain scalar could be read back as something else.

const SPECIAL_WORDS = /^(true|false|yes|no|on|off|y|n|null|~)$/i;
// Numbers (any base, YAML 1.1 sexagesimal, `.inf`) and dates; "8Gi" or "100m" stay plain.
const NUMBER_LIKE = /^[-+]?(\.(inf|nan)$|[0-9.][0-9a-fxo._:+-]*$)|^\d{4}-\d\d?-\d\d?/i;
const INDICATOR_START = /^[-?:,[\]{}#&*!|>'"%@`]/;
const AMBIGUOUS_INSIDE = /: |\s#|:$|^\s|\s$/;
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\ufeff]/;

function needsQuotes(text) {
  return (
    text === '' ||
    SPECIAL_WORDS.test(text) ||
    NUMBER_LIKE.test(text) ||
    INDICATOR_START.test(text) ||
    AMBIGUOUS_INSIDE.test(text) ||
    CONTROL.test(text)
  );
}

function scalar(value) {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'boolean') return String(value);
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : 'null';
  const text = String(value);
  return needsQuotes(text) ? JSON.stringify(text) : text;
}

const isCollection = (value) => value !== null && typeof value === 'object';
const isEmpty = (value) =>
  Array.isArray(value) ? value.length === 0 : Object.keys(value).length === 0;

function inline(value) {
  if (isCollection(value)) return Array.isArray(value) ? '[]' : '{}';
  return scalar(value);
}

function emit(value, indent, out) {
  const pad = ' '.repeat(indent);
  if (Array.isArray(value)) {
    for (const item of value) {
      if (isCollection(item) && !isEmpty(item)) {
        const nested = [];
        emit(item, indent + 2, nested);
        nested[0] = `${pad}- ${nested[0].slice(indent + 2)}`;
        out.push(...nested);
      } else {
        out.push(`${pad}- ${inline(item)}`);
      }
    }
    return;
  }
  for (const [key, item] of Object.entries(value)) {
    if (isCollection(item) && !isEmpty(item)) {
      out.push(`${pad}${scalar(key)}:`);
      // Sequences sit at their key's indentation, as kubectl writes them.
      emit(item, Array.isArray(item) ? indent : indent + 2, out);
    } else {
      out.push(`${pad}${scalar(key)}: ${inline(item)}`);
    }
  }
}

/** `value` (anything JSON can hold) as a YAML document. */
export function toYAML(value) {
  if (!isCollection(value) || isEmpty(value)) return `${inline(value)}\n`;
  const out = [];
  emit(value, 0, out);
  return `${out.join('\n')}\n`;
}
