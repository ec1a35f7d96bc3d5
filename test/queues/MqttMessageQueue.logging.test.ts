import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';

import { ConfigParams, Descriptor, References } from 'pip-services3-commons-nodex';
import { CompositeLogger, LogLevel, type ILogger } from 'pip-services3-components-nodex';
import { MessageEnvelope } from 'pip-services3-messaging-nodex';

import { logsAt } from '../../src/shared/pip';
import { MqttMessageQueue } from '../../src';
import { type AedesTestBroker, uniqueTopic } from '../helpers/brokers';
import { CapturingLogger } from '../helpers/components';
import { fixture, suiteFixture } from '../helpers/fixture';

const LOGGER = new Descriptor('test', 'logger', 'capturing', 'default', '1.0');

function composite(...loggers: unknown[]): CompositeLogger {
    const logger = new CompositeLogger();
    logger.setReferences(References.fromTuples(...loggers.flatMap((l, i) => [new Descriptor('test', 'logger', 'x', String(i), '1.0'), l])));
    return logger;
}

function capturing(level: LogLevel): CapturingLogger {
    const logger = new CapturingLogger();
    logger.setLevel(level);
    return logger;
}

describe('logsAt (skipping the formatting of lines no logger writes)', () => {
    it('is false without loggers, and follows the most verbose logger', () => {
        assert.equal(logsAt(composite(), LogLevel.Error), false);
        assert.equal(logsAt(composite(capturing(LogLevel.Info)), LogLevel.Trace), false);
        assert.equal(logsAt(composite(capturing(LogLevel.Info)), LogLevel.Info), true);
        assert.equal(logsAt(composite(capturing(LogLevel.Info), capturing(LogLevel.Trace)), LogLevel.Trace), true);
    });

    it('follows a level changed after the references were set', () => {
        const child = capturing(LogLevel.Info);
        const logger = composite(child);
        child.setLevel(LogLevel.Trace);
        assert.equal(logsAt(logger, LogLevel.Trace), true);
    });

    it('is true when it cannot tell: a logger without getLevel()', () => {
        const bare = { log: () => undefined } as unknown as ILogger;
        assert.equal(logsAt(composite(bare), LogLevel.Trace), true);
    });
});

describe('MqttMessageQueue trace lines', { timeout: 30000 }, () => {
    const suite = suiteFixture();
    let broker: AedesTestBroker;
    before(async () => { broker = await suite.aedes(); });

    for (const level of [LogLevel.Trace, LogLevel.Debug]) {
        it(`are written per message only when a logger takes them (logger at ${LogLevel[level]})`, async (t) => {
            const f = fixture(t);
            const logger = capturing(level);
            const queue = f.closing(new MqttMessageQueue('traced'));
            queue.configure(ConfigParams.fromTuples('connection.uri', broker.url, 'topic', uniqueTopic('trace'), 'options.autosubscribe', true));
            queue.setReferences(References.fromTuples(LOGGER, logger));
            await queue.open(null);
            const sent = new MessageEnvelope('c1', 'type', 'hello');
            await queue.send(null, sent);
            const received = await queue.receive(null, 5000);
            assert.equal(received?.getMessageAsString(), 'hello');
            const perMessage = logger.messages(LogLevel.Trace).filter((m) => /message [0-9a-f]{32}/.test(m));
            if (level === LogLevel.Trace) {
                // Raw mode over MQTT 3.1.1 carries no message id: the received envelope has a new one.
                assert.deepEqual(perMessage, [
                    `MQTT queue traced sent message ${sent.message_id}`,
                    `MQTT queue traced received message ${received.message_id}`,
                    `MQTT queue traced handed out message ${received.message_id}`,
                ]);
            } else {
                assert.deepEqual(perMessage, []);
                // (CapturingLogger keeps whatever it is handed: the queue itself must not send them.)
                assert.ok(logger.messages(LogLevel.Debug).length > 0, 'debug lines are still written');
            }
        });
    }
});
