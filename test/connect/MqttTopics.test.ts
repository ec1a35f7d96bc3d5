import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { checkTopicName, parseFilter } from '../../src/connect/MqttTopics';

describe('MQTT topic rules', () => {
    it('accepts valid topic names and explains invalid ones', () => {
        assert.equal(checkTopicName('a/b/c'), null);
        assert.equal(checkTopicName('/'), null);
        assert.equal(checkTopicName('$SYS/x'), null);
        assert.match(checkTopicName('') ?? '', /empty/);
        assert.match(checkTopicName('a/+') ?? '', /wildcards/);
        assert.match(checkTopicName('a/#') ?? '', /wildcards/);
        assert.match(checkTopicName('a\u0000b') ?? '', /NUL/);
        assert.match(checkTopicName('x'.repeat(65536)) ?? '', /65535 bytes/);
        assert.match(checkTopicName(42) ?? '', /string/);
    });

    it('parses filters and shared subscriptions', () => {
        assert.deepEqual(parseFilter('a/+/#'), { brokerFilter: 'a/+/#', matchFilter: 'a/+/#', shareGroup: null, hasWildcards: true });
        assert.deepEqual(parseFilter('$share/g1/jobs/+'), { brokerFilter: '$share/g1/jobs/+', matchFilter: 'jobs/+', shareGroup: 'g1', hasWildcards: true });
        assert.deepEqual(parseFilter('a/b'), { brokerFilter: 'a/b', matchFilter: 'a/b', shareGroup: null, hasWildcards: false });
    });

    it('rejects malformed filters with a reason', () => {
        for (const bad of ['', 'a/#/b', 'a/b#', 'a+/b', 'a/+b', '$share/', '$share/g', '$share/g/', '$share//a', '$share/g+/a', 'a\u0000']) {
            assert.equal(typeof parseFilter(bad), 'string', `filter '${bad}' should be rejected`);
        }
        assert.equal(typeof parseFilter(undefined), 'string');
    });

    // Mosquitto drops the connection on any of them (malformed UTF-8); a lone surrogate would go out as U+FFFD.
    const REFUSED: [string, RegExp][] = [
        ['a/\u0001', /U\+0001 \(a control character\) at index 2/],
        ['a/\t', /U\+0009 \(a control character\)/],
        ['a\n', /U\+000A/],
        ['a/\u001F', /U\+001F/],
        ['a/\u007F', /U\+007F \(a control character\)/],
        ['\u0085x', /U\+0085 \(a control character\) at index 0/],
        ['a/\u009F', /U\+009F/],
        ['a/\uFDD0', /U\+FDD0 \(a Unicode noncharacter\)/],
        ['a/\uFDEF', /U\+FDEF/],
        ['a/\uFFFE', /U\+FFFE/],
        ['a/\uFFFF', /U\+FFFF/],
        ['a/\u{1FFFE}', /U\+1FFFE \(a Unicode noncharacter\)/],
        ['a/\u{10FFFF}', /U\+10FFFF/],
        ['a/\uD800', /U\+D800 \(a lone surrogate, which has no UTF-8 form\)/],
        ['\uDC00/a', /U\+DC00 \(a lone surrogate/],
        ['a\uD800b', /U\+D800/],
        ['a\uDBFF\uDBFF\uDC00', /U\+DBFF \(a lone surrogate/],
    ];

    it('refuses control characters, noncharacters and lone surrogates in topics and filters, naming the character', () => {
        for (const [bad, reason] of REFUSED) {
            assert.match(checkTopicName(bad) ?? 'accepted', reason, `topic ${JSON.stringify(bad)}`);
            assert.match(parseFilter(bad) as string, reason, `filter ${JSON.stringify(bad)}`);
            // The same character, 9 code units further on (after `$share/g/`).
            const [, character, index] = /(U\+[0-9A-F]+) .* at index (\d+)/.exec(parseFilter(bad) as string) ?? [];
            assert.ok((parseFilter(`$share/g/${bad}`) as string).includes(`${character} `), `shared filter ${JSON.stringify(bad)}`);
            assert.ok((parseFilter(`$share/g/${bad}`) as string).includes(`at index ${Number(index) + 9}`), `shared filter ${JSON.stringify(bad)}`);
        }
    });

    it('accepts every other character, pairs of surrogates included', () => {
        for (const good of ['a/\u00A0', 'a/\u00E9t\u00E9', 'a/\uFDCF\uFDF0', 'a/\uFFFD', 'a/\u{1F600}', 'a/\u{1FFFD}', 'a/\u{10FFFD}', '\u4E2D/\u6587', ' ']) {
            assert.equal(checkTopicName(good), null, `topic ${JSON.stringify(good)}`);
            assert.equal(typeof parseFilter(good), 'object', `filter ${JSON.stringify(good)}`);
        }
    });
});
