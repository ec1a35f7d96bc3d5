// The chart of scenario 2: receive rate against the number of subscriptions on one connection,
// one line per variant and broker, as a self-contained SVG (no dependencies).

/** One point of a line. */
export interface ChartPoint {
    readonly subscriptions: number;
    readonly rate: number;
}

/** One line: a variant on a broker. */
export interface ChartLine {
    readonly label: string;
    readonly points: readonly ChartPoint[];
}

const WIDTH = 720;
const HEIGHT = 420;
const MARGIN = { left: 80, right: 200, top: 40, bottom: 60 };
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];
/** Dash patterns by broker, so that colours can stand for variants. */
const DASHES = ['', '6 4', '2 3'];

function escape(text: string): string {
    return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * An SVG line chart with a logarithmic x axis (subscriptions) and a linear y axis (messages/s).
 * `styleOf` gives each line its colour and dash index.
 */
export function dispatchChart(title: string, lines: readonly ChartLine[], styleOf: (label: string) => { color: number; dash: number }): string {
    const xs = lines.flatMap((l) => l.points.map((p) => p.subscriptions));
    const ys = lines.flatMap((l) => l.points.map((p) => p.rate));
    const minX = Math.log10(Math.max(1, Math.min(...xs)));
    const maxX = Math.log10(Math.max(10, ...xs));
    const maxY = Math.max(1, ...ys) * 1.1;
    const plotW = WIDTH - MARGIN.left - MARGIN.right;
    const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
    const x = (n: number): number => MARGIN.left + ((Math.log10(Math.max(1, n)) - minX) / (maxX - minX || 1)) * plotW;
    const y = (v: number): number => MARGIN.top + plotH - (v / maxY) * plotH;

    const parts: string[] = [];
    parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" font-family="sans-serif" font-size="12">`);
    parts.push(`<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`);
    parts.push(`<text x="${MARGIN.left}" y="24" font-size="15">${escape(title)}</text>`);
    // Axes, ticks and grid.
    for (let e = Math.ceil(minX); e <= Math.floor(maxX); e++) {
        const px = x(10 ** e);
        parts.push(`<line x1="${px}" y1="${MARGIN.top}" x2="${px}" y2="${MARGIN.top + plotH}" stroke="#eee"/>`);
        parts.push(`<text x="${px}" y="${MARGIN.top + plotH + 18}" text-anchor="middle">${(10 ** e).toLocaleString('en-US')}</text>`);
    }
    for (let i = 0; i <= 5; i++) {
        const v = (maxY / 5) * i;
        const py = y(v);
        parts.push(`<line x1="${MARGIN.left}" y1="${py}" x2="${MARGIN.left + plotW}" y2="${py}" stroke="#eee"/>`);
        parts.push(`<text x="${MARGIN.left - 8}" y="${py + 4}" text-anchor="end">${Math.round(v).toLocaleString('en-US')}</text>`);
    }
    parts.push(`<line x1="${MARGIN.left}" y1="${MARGIN.top + plotH}" x2="${MARGIN.left + plotW}" y2="${MARGIN.top + plotH}" stroke="black"/>`);
    parts.push(`<line x1="${MARGIN.left}" y1="${MARGIN.top}" x2="${MARGIN.left}" y2="${MARGIN.top + plotH}" stroke="black"/>`);
    parts.push(`<text x="${MARGIN.left + plotW / 2}" y="${HEIGHT - 16}" text-anchor="middle">subscriptions on one connection (log scale)</text>`);
    parts.push(`<text transform="translate(18 ${MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">messages received per second</text>`);
    // Lines and legend.
    lines.forEach((line, i) => {
        const style = styleOf(line.label);
        const color = COLORS[style.color % COLORS.length];
        const dash = DASHES[style.dash % DASHES.length];
        const sorted = [...line.points].sort((a, b) => a.subscriptions - b.subscriptions);
        const path = sorted.map((p, j) => `${j === 0 ? 'M' : 'L'}${x(p.subscriptions).toFixed(1)},${y(p.rate).toFixed(1)}`).join(' ');
        parts.push(`<path d="${path}" fill="none" stroke="${color}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`);
        for (const p of sorted) parts.push(`<circle cx="${x(p.subscriptions).toFixed(1)}" cy="${y(p.rate).toFixed(1)}" r="3" fill="${color}"/>`);
        const ly = MARGIN.top + 10 + i * 20;
        const lx = MARGIN.left + plotW + 16;
        parts.push(`<line x1="${lx}" y1="${ly}" x2="${lx + 28}" y2="${ly}" stroke="${color}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`);
        parts.push(`<text x="${lx + 34}" y="${ly + 4}">${escape(line.label)}</text>`);
    });
    parts.push('</svg>');
    return parts.join('\n') + '\n';
}
