// A node:test reporter for the broker matrix: one JSON line per finished test, with the titles of
// its ancestors (node:test reports a test's nesting, not its parents). Read by test-brokers.mjs.
export default async function* matrixReporter(source) {
    const titles = [];
    for await (const { type, data } of source) {
        if (type === 'test:start') {
            titles.length = data.nesting;
            titles.push(data.name);
        } else if (type === 'test:pass' || type === 'test:fail') {
            titles.length = data.nesting;
            const error = data.details?.error;
            yield `${JSON.stringify({
                outcome: type === 'test:pass' ? 'pass' : 'fail',
                path: [...titles, data.name],
                kind: data.details?.type ?? 'test',
                skip: data.skip ?? false,
                ms: data.details?.duration_ms,
                error: error ? String(error.cause?.message ?? error.cause ?? error.message ?? error) : undefined,
                failureType: error?.failureType,
            })}\n`;
        }
    }
}
