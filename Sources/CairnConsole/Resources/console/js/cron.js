// The next occurrences of a five-field cron expression (minute hour day-of-month month
// day-of-week; lists, ranges, steps, names, and @hourly-style macros) in an IANA time zone,
// for showing a schedule's next runs. The server's scheduler is the authority; this mirrors
// it for display.

const macros = { '@yearly': '0 0 1 1 *', '@annually': '0 0 1 1 *', '@monthly': '0 0 1 * *', '@weekly': '0 0 * * 0', '@daily': '0 0 * * *', '@midnight': '0 0 * * *', '@hourly': '0 * * * *' };
const names = [
  null, null, null,
  ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'],
  ['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'],
];
const bounds = [[0, 59], [0, 23], [1, 31], [1, 12], [0, 7]];

function parseField(text, index) {
  const [low, high] = bounds[index];
  const values = new Set();
  const value = (token) => {
    const named = names[index]?.indexOf(token.toUpperCase());
    const number = named >= 0 ? named + (index === 3 ? 1 : 0) : Number(token);
    if (!Number.isInteger(number) || number < low || number > high) throw new Error(`'${token}' is out of range`);
    return number;
  };
  for (const part of text.split(',')) {
    const [range, stepText] = part.split('/');
    const step = stepText === undefined ? 1 : Number(stepText);
    if (!Number.isInteger(step) || step < 1) throw new Error(`bad step in '${part}'`);
    let [from, to] = [low, high];
    if (range !== '*' && range !== '?') {
      const [a, b] = range.split('-');
      from = value(a);
      to = b === undefined ? (stepText === undefined ? from : high) : value(b);
    }
    for (let number = from; number <= to; number += step) values.add(index === 4 && number === 7 ? 0 : number);
  }
  return { values, star: text === '*' || text === '?' };
}

/** Parses an expression; throws Error with a readable message when it is not valid. */
export function parse(expression) {
  const text = macros[expression.trim().toLowerCase()] || expression.trim();
  const fields = text.split(/\s+/);
  if (fields.length !== 5) throw new Error('a cron expression has five fields: minute hour day month weekday');
  return fields.map(parseField);
}

function wallClock(zone) {
  const format = new Intl.DateTimeFormat('en-US', { timeZone: zone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', weekday: 'short' });
  return (date) => {
    const parts = Object.fromEntries(format.formatToParts(date).map((part) => [part.type, part.value]));
    return { month: Number(parts.month), day: Number(parts.day), hour: Number(parts.hour), minute: Number(parts.minute), weekday: names[4].indexOf(parts.weekday.toUpperCase()) };
  };
}

/** The next `count` instants (Date) after `from` at which `expression` fires in `zone`. */
export function next(expression, zone = 'UTC', count = 5, from = new Date()) {
  const [minute, hour, day, month, weekday] = parse(expression);
  const local = wallClock(zone);
  const dayMatches = (wall) => {
    const byDay = day.values.has(wall.day);
    const byWeekday = weekday.values.has(wall.weekday);
    // Vixie cron: with both fields restricted, either may match.
    if (!day.star && !weekday.star) return byDay || byWeekday;
    return (day.star || byDay) && (weekday.star || byWeekday);
  };
  const results = [];
  let time = Math.floor(from.getTime() / 60000) * 60000 + 60000;
  const end = time + 366 * 4 * 86400000;
  while (results.length < count && time < end) {
    const wall = local(new Date(time));
    if (!month.values.has(wall.month) || !dayMatches(wall)) { time += (60 - wall.minute) * 60000; continue; }
    if (!hour.values.has(wall.hour)) { time += (60 - wall.minute) * 60000; continue; }
    if (minute.values.has(wall.minute)) results.push(new Date(time));
    time += 60000;
  }
  return results;
}
