import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { IPublishPacket } from 'mqtt';
import { CompositeCounters, CompositeLogger, LogLevel } from 'pip-services3-components-nodex';

import type { IMqttMessageListener } from '../../../src/connect/IMqttMessageListener';
import { MqttDispatcher } from '../../../src/connect/subscriptions/MqttDispatcher';
import type { MqttSubscriptions } from '../../../src/connect/subscriptions/MqttSubscriptions';
import { MqttTopicRouter } from '../../../src/connect/subscriptions/MqttTopicRouter';
import { type MqttHeldMessage, MqttUnroutedHold } from '../../../src/connect/subscriptions/MqttUnroutedHold';
import { type CapturingLogger, RecordingListener, type RecordingCounters, testReferences } from '../../helpers/components';

const URI = 'mqtt://broker.test:1883';

/** The part of MqttSubscriptions the dispatcher uses (match), over a real router. */
class FakeSubscriptions {
    private readonly _router = new MqttTopicRouter<IMqttMessageListener>();

    public add(filter: string, listener: IMqttMessageListener): void {
        this._router.add(filter, listener);
    }

    public match(topic: string): readonly IMqttMessageListener[] {
        return this._router.match(topic);
    }
}

function packet(topic: string, payload: Buffer): IPublishPacket {
    return { cmd: 'publish', topic, payload, qos: 1, retain: false, dup: false, messageId: 1 };
}

function setup(persistent: boolean, holdLimit = 100): {
    dispatcher: MqttDispatcher; subscriptions: FakeSubscriptions; logger: CapturingLogger; counters: RecordingCounters;
    send: (topic: string, text?: string) => void;
} {
    const { references, logger, counters } = testReferences();
    const compositeLogger = new CompositeLogger();
    compositeLogger.setReferences(references);
    const compositeCounters = new CompositeCounters();
    compositeCounters.setReferences(references);
    const subscriptions = new FakeSubscriptions();
    const dispatcher = new MqttDispatcher(subscriptions as unknown as MqttSubscriptions,
        { logger: compositeLogger, counters: compositeCounters }, URI, persistent, holdLimit);
    const send = (topic: string, text = topic): void => {
        const payload = Buffer.from(text);
        dispatcher.dispatch(topic, payload, packet(topic, payload));
    };
    return { dispatcher, subscriptions, logger, counters, send };
}

/** The payloads a recording listener got, as text. */
function texts(listener: RecordingListener): string[] {
    return listener.received.map((r) => r.data.toString());
}

function warnings(logger: CapturingLogger): string[] {
    return logger.messages(LogLevel.Warn);
}

/** Lets rejected listener promises be handled. */
async function settle(): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
}

describe('MqttDispatcher', () => {
    it('hands a message to every listener whose filter matches, with the same topic, payload and packet', () => {
        const { subscriptions, send, counters } = setup(false);
        const exact = new RecordingListener();
        const wild = new RecordingListener();
        const other = new RecordingListener();
        subscriptions.add('a/b', exact);
        subscriptions.add('a/#', wild);
        subscriptions.add('x/+', other);
        send('a/b', 'one');
        assert.deepEqual(texts(exact), ['one']);
        assert.deepEqual(texts(wild), ['one']);
        assert.deepEqual(texts(other), []);
        assert.equal(exact.received[0].topic, 'a/b');
        assert.equal(exact.received[0].data, wild.received[0].data, 'one payload, shared');
        assert.equal(exact.received[0].packet, wild.received[0].packet);
        assert.equal(counters.increments.get('mqtt.received_messages'), 1);
    });

    it('logs a listener that throws or rejects, and still hands the message to the others', async () => {
        const { subscriptions, send, logger } = setup(false);
        const after = new RecordingListener();
        subscriptions.add('a/b', { onMessage: () => { throw new Error('sync boom'); } });
        subscriptions.add('a/b', { onMessage: () => Promise.reject(new Error('async boom')) });
        // eslint-disable-next-line @typescript-eslint/only-throw-error -- a listener may throw anything
        subscriptions.add('a/b', { onMessage: () => { throw 'a string'; } });
        subscriptions.add('a/b', after);
        send('a/b', 'm');
        assert.deepEqual(texts(after), ['m'], 'the listener after the failing ones gets it');
        await settle();
        const errors = logger.entries.filter((e) => e.level === LogLevel.Error);
        assert.equal(errors.length, 3);
        for (const e of errors) assert.equal(e.message, 'MQTT message listener failed on topic a/b');
        assert.deepEqual(errors.map((e) => e.error?.message).sort(), ['a string', 'async boom', 'sync boom']);
        assert.ok(errors.every((e) => e.error instanceof Error), 'a thrown string is logged as an Error');
    });

    it('counts mqtt.received_messages once per message, routed, held or dropped', () => {
        const { subscriptions, send, counters } = setup(true, 1);
        const one = new RecordingListener();
        const two = new RecordingListener();
        subscriptions.add('a/#', one);
        subscriptions.add('a/b', two);
        send('a/b');
        send('z/1');
        send('z/2');
        assert.equal(counters.increments.get('mqtt.received_messages'), 3);
    });

    describe('with a clean session (persistent false)', () => {
        it('drops messages no listener matches, without counting them as dropped or logging, and holds nothing', () => {
            const { dispatcher, send, counters, logger } = setup(false, 1);
            send('a/b', '1');
            send('a/b', '2');
            assert.equal(counters.increments.get('mqtt.dropped_messages'), undefined);
            assert.equal(counters.increments.get('mqtt.received_messages'), 2);
            assert.deepEqual(logger.entries, []);
            const late = new RecordingListener();
            dispatcher.releaseHeld('a/b', late);
            dispatcher.released('a/b');
            dispatcher.dropHeld();
            assert.deepEqual(late.received, []);
            assert.deepEqual(logger.entries, []);
        });
    });

    describe('with a persistent session', () => {
        it('holds messages no listener matches, in order, and hands the matching ones to a new listener, keeping the others', () => {
            const { dispatcher, send, counters } = setup(true);
            send('a/1', 'a1');
            send('b/1', 'b1');
            send('a/2', 'a2');
            send('b/2', 'b2');
            assert.equal(counters.increments.get('mqtt.dropped_messages'), undefined, 'held, not dropped');
            const a = new RecordingListener();
            dispatcher.releaseHeld('a/+', a);
            assert.deepEqual(texts(a), ['a1', 'a2'], 'in arrival order');
            assert.deepEqual(a.topics(), ['a/1', 'a/2']);
            const again = new RecordingListener();
            dispatcher.releaseHeld('a/+', again);
            assert.deepEqual(again.received, [], 'each held message goes to one listener');
            const b = new RecordingListener();
            dispatcher.releaseHeld('b/#', b);
            assert.deepEqual(texts(b), ['b1', 'b2'], 'kept for their own filter');
        });

        it('delivers to the listeners a message matches instead of holding it', () => {
            const { dispatcher, subscriptions, send } = setup(true);
            const live = new RecordingListener();
            subscriptions.add('a/b', live);
            send('a/b', 'm');
            assert.deepEqual(texts(live), ['m']);
            const late = new RecordingListener();
            dispatcher.releaseHeld('a/b', late);
            assert.deepEqual(late.received, [], 'nothing was held');
        });

        it('logs a held message whose new listener throws', () => {
            const { dispatcher, send, logger } = setup(true);
            send('a/b');
            dispatcher.releaseHeld('a/b', { onMessage: () => { throw new Error('boom'); } });
            assert.deepEqual(logger.messages(LogLevel.Error), ['MQTT message listener failed on topic a/b']);
        });

        it('drops and counts messages beyond the hold limit, with one warning, and warns again after a release made room', () => {
            const { dispatcher, send, counters, logger } = setup(true, 2);
            for (let i = 1; i <= 5; i++) send(`a/${i}`, `m${i}`);
            assert.equal(counters.increments.get('mqtt.dropped_messages'), 3);
            assert.equal(warnings(logger).length, 1, 'one warning for a run of drops');
            assert.match(warnings(logger)[0], /MQTT broker at mqtt:\/\/broker\.test:1883 sent messages for topics no listener subscribes to/);
            assert.match(warnings(logger)[0], /2 are held for a future listener/);

            const taker = new RecordingListener();
            dispatcher.releaseHeld('a/1', taker);
            assert.deepEqual(texts(taker), ['m1'], 'the first ones were held');
            send('a/6', 'm6');
            assert.equal(counters.increments.get('mqtt.dropped_messages'), 3, 'the room made is used');
            send('a/7', 'm7');
            assert.equal(counters.increments.get('mqtt.dropped_messages'), 4);
            assert.equal(warnings(logger).length, 2, 'a new run of drops warns again');
        });

        it('a release that found nothing to hand does not make the next drop warn again', () => {
            const { dispatcher, send, logger } = setup(true, 1);
            send('a/1');
            send('a/2');
            assert.equal(warnings(logger).length, 1);
            dispatcher.releaseHeld('z/z', new RecordingListener());
            send('a/3');
            assert.equal(warnings(logger).length, 1);
        });

        it('drops and counts messages for a filter released by this process, until it is subscribed again', () => {
            const { dispatcher, send, counters, logger } = setup(true);
            dispatcher.released('a/+');
            send('a/1', 'gone');
            send('b/1', 'kept');
            assert.equal(counters.increments.get('mqtt.dropped_messages'), 1);
            assert.deepEqual(warnings(logger), [], 'no warning: nobody here wants them');

            const back = new RecordingListener();
            dispatcher.releaseHeld('a/+', back);
            assert.deepEqual(back.received, [], 'a released message was not held');
            send('a/2', 'held');
            assert.equal(counters.increments.get('mqtt.dropped_messages'), 1, 'held again once subscribed again');
            const next = new RecordingListener();
            dispatcher.releaseHeld('a/+', next);
            assert.deepEqual(texts(next), ['held']);
        });

        it('dropHeld() counts and logs what is still held, once', () => {
            const { dispatcher, send, counters, logger } = setup(true);
            send('a/1');
            send('a/2');
            send('b/1');
            dispatcher.releaseHeld('b/1', new RecordingListener());
            dispatcher.dropHeld();
            assert.equal(counters.increments.get('mqtt.dropped_messages'), 2);
            assert.deepEqual(warnings(logger), ['Closed the MQTT connection to mqtt://broker.test:1883 with 2 messages of its persistent session ' +
                'that no listener subscribed to; they are dropped']);
            dispatcher.dropHeld();
            assert.equal(counters.increments.get('mqtt.dropped_messages'), 2, 'nothing left to drop');
            assert.equal(warnings(logger).length, 1);
            const late = new RecordingListener();
            dispatcher.releaseHeld('a/+', late);
            assert.deepEqual(late.received, []);
        });

        it('dropHeld() with nothing held says nothing', () => {
            const { dispatcher, counters, logger } = setup(true);
            dispatcher.dropHeld();
            assert.equal(counters.increments.get('mqtt.dropped_messages'), undefined);
            assert.deepEqual(logger.entries, []);
        });
    });
});

describe('MqttUnroutedHold', () => {
    function message(topic: string): MqttHeldMessage {
        const payload = Buffer.from(topic);
        return { topic, payload, packet: packet(topic, payload) };
    }

    it('holds up to its limit, then refuses', () => {
        const hold = new MqttUnroutedHold(2);
        assert.equal(hold.hold(message('a')), true);
        assert.equal(hold.hold(message('b')), true);
        assert.equal(hold.hold(message('c')), false);
        assert.equal(hold.size, 2);
        hold.take('a');
        assert.equal(hold.size, 1);
        assert.equal(hold.hold(message('c')), true, 'room again after a take');
    });

    it('take() returns the messages matching a filter, in arrival order, and keeps the others', () => {
        const hold = new MqttUnroutedHold(10);
        for (const topic of ['s/1', 'x', 's/2/deep', 's/3', '$SYS/s']) hold.hold(message(topic));
        assert.deepEqual(hold.take('s/#').map((m) => m.topic), ['s/1', 's/2/deep', 's/3']);
        assert.deepEqual(hold.take('#').map((m) => m.topic), ['x'], "'#' does not match a '$' topic");
        assert.deepEqual(hold.take('$SYS/+').map((m) => m.topic), ['$SYS/s']);
        assert.equal(hold.size, 0);
        assert.deepEqual(hold.take('s/#'), []);
    });

    it('clear() forgets the messages', () => {
        const hold = new MqttUnroutedHold(10);
        hold.hold(message('a'));
        hold.released('r');
        hold.clear();
        assert.equal(hold.size, 0);
        assert.deepEqual(hold.take('a'), []);
    });

    it('remembers released filters, wildcards included, until take() of the same filter', () => {
        const hold = new MqttUnroutedHold(10);
        assert.equal(hold.wasReleased('a/b'), false);
        hold.released('a/+');
        hold.released('c/#');
        assert.equal(hold.wasReleased('a/b'), true);
        assert.equal(hold.wasReleased('a/b/c'), false);
        assert.equal(hold.wasReleased('c'), true);
        assert.equal(hold.wasReleased('c/d/e'), true);
        assert.equal(hold.wasReleased('x'), false);
        hold.take('a/b');
        assert.equal(hold.wasReleased('a/b'), true, 'another filter that matches the topic does not forget a/+');
        hold.take('a/+');
        assert.equal(hold.wasReleased('a/b'), false);
        assert.equal(hold.wasReleased('c/d'), true);
    });

    it('remembers the last 10000 released filters, forgetting the oldest first', () => {
        const hold = new MqttUnroutedHold(10);
        for (let i = 0; i < 10000; i++) hold.released(`f/${i}`);
        assert.equal(hold.wasReleased('f/0'), true);
        assert.equal(hold.wasReleased('f/9999'), true);
        hold.released('f/0');
        hold.released('f/10000');
        assert.equal(hold.wasReleased('f/0'), false, 'the oldest is forgotten (releasing it again did not renew it)');
        assert.equal(hold.wasReleased('f/1'), true);
        assert.equal(hold.wasReleased('f/10000'), true);
        hold.released('f/10001');
        assert.equal(hold.wasReleased('f/1'), false);
        assert.equal(hold.wasReleased('f/2'), true);

        hold.take('f/5000');
        hold.released('f/10002');
        assert.equal(hold.wasReleased('f/2'), true, 'a filter taken back made room: nothing else is forgotten');
        assert.equal(hold.wasReleased('f/10002'), true);
    });
});
