import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';

import { ConfigParams } from 'pip-services3-commons-nodex';

import { MqttConnection } from '../../../src';
import { MQTT_CONFIG_KEYS, MQTT_CONNECTION_DEFAULTS, URI_QUERY_KEYS } from '../../../src/connect/config/MqttConfigKeys';

/** The folder holding package.json: the tests run from dist/test/... */
function repoRoot(): string {
    let dir = __dirname;
    while (!existsSync(join(dir, 'package.json'))) {
        const parent = dirname(dir);
        if (parent === dir) throw new Error(`no package.json above ${__dirname}`);
        dir = parent;
    }
    return dir;
}

/** The text of the first of the files (relative to the repository root) that exists, and its path. */
function readSource(...candidates: string[]): { path: string; text: string } {
    const root = repoRoot();
    const path = candidates.find((p) => existsSync(join(root, p)));
    if (path === undefined) throw new Error(`none of ${candidates.join(', ')} exists under ${root}`);
    return { path, text: readFileSync(join(root, path), 'utf8') };
}

/** The rows of the README's configuration table, by key: the default cell and the meaning cell. */
function readmeTable(readme: string): Map<string, { default: string; meaning: string }> {
    const section = readme.split(/^## Configuration$/m)[1]?.split(/^#{1,3} /m)[0];
    assert.ok(section !== undefined, 'README.md has no "## Configuration" section');
    const rows = new Map<string, { default: string; meaning: string }>();
    for (const line of section.split('\n').filter((l) => l.startsWith('| `'))) {
        const cells = line.slice(1, -1).split('|').map((c) => c.trim());
        assert.equal(cells.length, 3, `README.md configuration table: a row without 3 cells: ${line}`);
        const key = cells[0].replace(/^`|`$/g, '');
        assert.ok(!rows.has(key), `README.md configuration table: ${key} has two rows`);
        rows.set(key, { default: cells[1], meaning: cells[2] });
    }
    return rows;
}

/**
 * The keys a `### Configuration parameters ###` doc comment lists, with the text of each entry
 * (its continuation lines joined). An entry nested under `__options__` is `options.<name>`;
 * under `__connection(s)__` it is `connection.<name>`, and the heading lists `connections.N.*`
 * when its text names it.
 */
function commentKeys(source: string): Map<string, string> {
    const block = source.split('### Configuration parameters ###')[1]?.split(/^\s*\* ###/m)[0];
    assert.ok(block !== undefined, 'no "### Configuration parameters ###" section');
    const keys = new Map<string, string>();
    /** The entry at the top level, while its nested entries are read; `text` is set at the first of them. */
    let section: { name: string; plural: boolean; text?: string } | null = null;
    let current: string | null = null;
    for (const line of block.split('\n').map((l) => l.replace(/^\s*\*( |$)/, ''))) {
        const entry = /^( *)- __(\w+)(\(s\))?__:(.*)$/.exec(line);
        if (entry === null) {
            if (line.trim() === '') current = null;
            else if (current !== null) keys.set(current, `${keys.get(current)} ${line.trim()}`);
            continue;
        }
        const [, indent, name, plural, text] = entry;
        if (indent === '') {
            section = { name, plural: plural !== undefined };
            current = name;
        } else {
            assert.ok(section !== null, `${name} is nested under nothing`);
            if (section.text === undefined) {
                // A heading, not a key of its own.
                section.text = keys.get(section.name) ?? '';
                keys.delete(section.name);
                const many = `${section.name}s.N.*`;
                if (section.plural && section.text.includes(`\`${many}\``)) keys.set(many, section.text);
            }
            current = `${section.name}.${name}`;
        }
        keys.set(current, text.trim());
    }
    return keys;
}

/** What differs between the keys a place lists and those the table expects there. */
function keyProblems(place: string, listed: Iterable<string>, expected: readonly string[], known = 'a key of MqttConfigKeys'): string[] {
    const have = new Set(listed);
    return [
        ...expected.filter((k) => !have.has(k)).map((k) => `${k}: missing in ${place}`),
        ...[...have].filter((k) => !expected.includes(k)).map((k) => `${k}: in ${place}, but not ${known}`),
    ];
}

/** Fails with every problem, one a line, or passes when there are none. */
function noProblems(problems: string[]): void {
    assert.deepEqual(problems, [], `\n${problems.join('\n')}`);
}

/** The table's fixed defaults, as ConfigParams holds them (text). */
function tableDefaults(): Record<string, string> {
    return Object.fromEntries(MQTT_CONFIG_KEYS.flatMap((k) => k.default === undefined ? [] : [[k.key, String(k.default)]]));
}

/** Opens up what configure() made of the configuration. */
class ConfiguredConnection extends MqttConnection {
    public seen() {
        return {
            options: this._options.getAsObject() as Record<string, string>,
            retryConnect: this._retryConnect,
            connectTimeout: this._connectTimeout,
            reconnectTimeout: this._reconnectTimeout,
            keepAliveTimeout: this._keepAliveTimeout,
            cleanSession: this.isCleanSession(),
        };
    }
}

describe('MqttConfigKeys', () => {
    it('builds the defaults MqttConnectionSettings.ts had as a literal list, key by key and in order', () => {
        const literal = ConfigParams.fromTuples(
            'options.retry_connect', true,
            'options.connect_timeout', 30000,
            'options.reconnect_timeout', 1000,
            'options.max_reconnect_timeout', 30000,
            'options.keepalive_timeout', 60000,
            'options.clean_session', true,
            'options.max_offline_messages', 10000,
            'options.protocol_version', 4,
            'options.broker_assigns_client_id', false,
            'options.topic_alias_maximum', 0,
            'options.ssl_reject_unauthorized', true,
            'options.max_qos', 2,
            'options.will_qos', 0,
            'options.will_retain', false,
        );
        assert.deepEqual(MQTT_CONNECTION_DEFAULTS.getKeys(), literal.getKeys());
        for (const key of literal.getKeys()) {
            assert.equal(MQTT_CONNECTION_DEFAULTS.getAsNullableString(key), literal.getAsString(key), key);
        }
    });

    it('builds the uri query keys MqttConnectionResolver.ts had as a literal map, in order', () => {
        assert.deepEqual(Object.entries(URI_QUERY_KEYS), Object.entries({
            client_id: 'client_id',
            clientId: 'client_id',
            retry_connect: 'options.retry_connect',
            connect_timeout: 'options.connect_timeout',
            reconnect_timeout: 'options.reconnect_timeout',
            max_reconnect_timeout: 'options.max_reconnect_timeout',
            keepalive_timeout: 'options.keepalive_timeout',
            clean_session: 'options.clean_session',
            max_offline_messages: 'options.max_offline_messages',
            protocol_version: 'options.protocol_version',
            session_expiry: 'options.session_expiry',
            broker_assigns_client_id: 'options.broker_assigns_client_id',
            topic_alias_maximum: 'options.topic_alias_maximum',
            ssl_server_name: 'options.ssl_server_name',
            ssl_reject_unauthorized: 'options.ssl_reject_unauthorized',
        }));
    });

    it('is frozen and names each key once', () => {
        assert.ok(Object.isFrozen(MQTT_CONFIG_KEYS) && MQTT_CONFIG_KEYS.every((k) => Object.isFrozen(k)));
        assert.ok(Object.isFrozen(URI_QUERY_KEYS));
        const names = MQTT_CONFIG_KEYS.flatMap((k) => [k.key, ...(k.aliases ?? [])]);
        assert.deepEqual(names.filter((name, i) => names.indexOf(name) !== i), [], 'keys named twice');
        for (const k of MQTT_CONFIG_KEYS.filter((e) => e.mqtt5 === true)) {
            assert.ok(k.key.startsWith('options.'), `${k.key}: only options are MQTT 5 only`);
        }
    });

    it('MqttConnection uses the table\'s defaults', () => {
        const expected = tableDefaults();
        /** What differs between the values a place has and the table's defaults, by key. */
        const differences = (place: string, actual: Record<string, string | undefined>): string[] =>
            [...new Set([...Object.keys(expected), ...Object.keys(actual)])]
                .filter((key) => actual[key] !== expected[key])
                .map((key) => `${key}: ${place} has ${actual[key] ?? 'no value'}, the table ${expected[key] ?? 'no default'}`);

        const connection = new ConfiguredConnection();
        connection.configure(new ConfigParams());
        const seen = connection.seen();
        const options = Object.fromEntries(Object.entries(seen.options).map(([name, value]) => [`options.${name}`, value]));
        noProblems([
            ...differences('MqttConnection.defaultConfig', MqttConnection.defaultConfig.getAsObject() as Record<string, string>),
            ...differences('MqttConnection configured with nothing', options),
            ...differences('MqttConnection configured with nothing', {
                ...expected,
                'options.retry_connect': String(seen.retryConnect),
                'options.connect_timeout': String(seen.connectTimeout),
                'options.reconnect_timeout': String(seen.reconnectTimeout),
                'options.keepalive_timeout': String(seen.keepAliveTimeout),
                'options.clean_session': String(seen.cleanSession),
            }),
        ]);
        // No fixed default: at most 23 letters and digits, as documented.
        assert.match(connection.getStatus().clientId, /^[0-9A-Za-z]{1,23}$/, 'client_id: the one MqttConnection made');
    });

    describe('agrees with the docs', () => {
        const readme = readSource('README.md');
        const connection = readSource('src/connect/MqttConnection.ts');
        const resolver = readSource('src/connect/config/MqttConnectionResolver.ts');
        const allKeys = MQTT_CONFIG_KEYS.map((k) => k.key);
        const uriNames = MQTT_CONFIG_KEYS.flatMap((k) => k.uriQuery ?? []);

        it('README.md: the configuration table has a row for each key, with its default and aliases', () => {
            const rows = readmeTable(readme.text);
            const problems = keyProblems('the README.md configuration table', rows.keys(), allKeys);
            for (const k of MQTT_CONFIG_KEYS) {
                const row = rows.get(k.key);
                if (row === undefined) continue;
                const shown = /^`([^`]*)`/.exec(row.default)?.[1];
                if (k.default !== undefined && shown !== String(k.default)) {
                    problems.push(`${k.key}: the README.md configuration table shows default '${row.default}', not \`${String(k.default)}\``);
                }
                for (const alias of k.aliases ?? []) {
                    if (!row.meaning.includes(`\`${alias}\``)) problems.push(`${k.key}: its README.md row does not name its alias ${alias}`);
                }
            }
            noProblems(problems);
        });

        it('README.md: the connection.uri row names the uri query keys', () => {
            const meaning = readmeTable(readme.text).get('connection.uri')?.meaning ?? '';
            const query = /Query keys: ([^;]*)/.exec(meaning)?.[1];
            assert.ok(query !== undefined, 'the README.md connection.uri row has no "Query keys: ...;"');
            const named = [...query.matchAll(/`(\w+)`/g)].map((m) => m[1]);
            noProblems(keyProblems('the query keys of the README.md connection.uri row', named, uriNames, 'a uri query key of MqttConfigKeys'));
        });

        it(`${connection.path}: the class comment lists each key, with its default and aliases`, () => {
            const listed = commentKeys(connection.text);
            const place = `the ${connection.path} configuration parameters`;
            const problems = keyProblems(place, listed.keys(), allKeys);
            for (const k of MQTT_CONFIG_KEYS) {
                const text = listed.get(k.key);
                if (text === undefined) continue;
                const shown = /default: ([^\s),;]+)/.exec(text)?.[1];
                if (k.default !== undefined && shown !== String(k.default)) {
                    problems.push(`${k.key}: ${place} show ${shown === undefined ? 'no default' : `default: ${shown}`}, not default: ${String(k.default)}`);
                }
                for (const alias of k.aliases ?? []) {
                    if (!text.includes(alias.substring(alias.lastIndexOf('.') + 1))) problems.push(`${k.key}: ${place} do not name its alias ${alias}`);
                }
            }
            noProblems(problems);
        });

        it(`${resolver.path}: the class comment lists the connection and credential keys and the uri query keys`, () => {
            const listed = commentKeys(resolver.text);
            const place = `the ${resolver.path} configuration parameters`;
            const expected = allKeys.filter((k) => /^(connection|connections|credential|credentials)\./.test(k));
            const problems = keyProblems(place, listed.keys(), expected);
            const query = /query keys: (.*)$/.exec(listed.get('connection.uri') ?? '')?.[1];
            if (query === undefined) {
                problems.push(`connection.uri: ${place} name no "query keys: ..."`);
            } else {
                const named = (query.match(/\w+/g) ?? []).filter((word) => word !== 'or');
                problems.push(...keyProblems(`the query keys of connection.uri in ${place}`, named, uriNames, 'a uri query key of MqttConfigKeys'));
            }
            noProblems(problems);
        });
    });
});
