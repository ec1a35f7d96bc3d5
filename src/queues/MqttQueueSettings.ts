import type { IClientSubscribeOptions } from 'mqtt';
import { BooleanConverter, ConfigException, ConfigParams } from 'pip-services3-commons-nodex';

import { cid, nonEmpty } from '../shared/pip';
import { MqttErrorCode } from '../connect/errors/MqttErrorCode';
import { checkTopicName, parseFilter } from '../connect/MqttTopics';

type QoS = IClientSubscribeOptions['qos'];

/**
 * The defaults of [[MqttMessageQueue]]'s own options, by configuration key. `topic` has no
 * fixed default: it is the queue name.
 */
export const MQTT_QUEUE_DEFAULTS: ConfigParams = ConfigParams.fromTuples(
    'options.serialize_envelope', false,
    'options.autosubscribe', false,
    'options.qos', 0,
    'options.retain', false,
    'options.max_buffered', 10000,
    'options.acknowledge', 'after_processing',
);

/** The most messages `options.max_buffered` may allow (a sanity bound, not a memory promise). */
const MAX_BUFFERED_LIMIT = 100_000_000;

/** The effective settings of a queue, read and checked at open(). */
export interface MqttQueueSettings {
    /** The topic messages are published to. */
    readonly topic: string;
    /** The filter subscribed at the broker: the topic, or `$share/<group>/<topic>`. */
    readonly filter: string;
    readonly group: string | null;
    readonly serializeEnvelope: boolean;
    readonly autosubscribe: boolean;
    readonly qos: QoS;
    readonly retain: boolean;
    readonly maxBuffered: number;
    /**
     * When a QoS 1 message is acknowledged to the broker: once it is settled (complete(),
     * abandon(), moveToDeadLetter(), or the listener's receiver done), or when it arrives.
     */
    readonly acknowledge: 'after_processing' | 'on_arrival';
    /** Where moveToDeadLetter() publishes, or null (it then fails with `MQTT_NO_DEAD_LETTER_TOPIC`). */
    readonly deadLetterTopic: string | null;
}

function badOption(correlationId: string | null, key: string, reason: string): ConfigException {
    return new ConfigException(cid(correlationId), MqttErrorCode.BadOption, `MQTT queue option ${key} ${reason}`)
        .withDetails('key', key);
}

/**
 * Reads and checks a queue's settings.
 *
 * @param config the queue's configuration as given (defaults are applied here).
 * @param name   the queue name, the default topic.
 * @throws ConfigException `MQTT_NO_TOPIC` or `MQTT_BAD_OPTION` (details.key names the key).
 */
export function readQueueSettings(correlationId: string | null, config: ConfigParams, name: string | null): MqttQueueSettings {
    const merged = config.setDefaults(MQTT_QUEUE_DEFAULTS);
    const text = (key: string): string | undefined => nonEmpty(merged.getAsNullableString(key));
    const flag = (key: string): boolean => {
        const value = BooleanConverter.toNullableBoolean(text(key));
        if (value == null) throw badOption(correlationId, key, `must be true or false, not '${text(key)}'`);
        return value;
    };
    const integer = (key: string, min: number, max: number): number => {
        const raw = text(key) ?? '';
        const value = /^\s*\d+\s*$/.test(raw) ? Number(raw) : NaN;
        if (!Number.isSafeInteger(value) || value < min || value > max) {
            throw badOption(correlationId, key, `must be an integer from ${min} to ${max}, not '${raw}'`);
        }
        return value;
    };

    const topic = text('topic') ?? nonEmpty(name);
    if (topic == null) {
        throw new ConfigException(cid(correlationId), MqttErrorCode.NoTopic,
            'MQTT queue has no topic: configure topic, or give the queue a name');
    }
    const parsed = parseFilter(topic);
    if (typeof parsed === 'string') throw badOption(correlationId, 'topic', `is not a valid MQTT topic: ${parsed}`).withDetails('topic', topic);
    if (parsed.shareGroup != null) {
        throw badOption(correlationId, 'topic', 'must not start with $share/: set options.group for a shared subscription')
            .withDetails('topic', topic);
    }

    const group = text('options.group') ?? null;
    if (group != null && /[/+#]/.test(group)) {
        throw badOption(correlationId, 'options.group', `must not contain '/', '+' or '#', not '${group}'`);
    }

    const acknowledge = text('options.acknowledge');
    if (acknowledge !== 'after_processing' && acknowledge !== 'on_arrival') {
        throw badOption(correlationId, 'options.acknowledge', `must be after_processing or on_arrival, not '${acknowledge}'`);
    }
    const deadLetterTopic = text('options.dead_letter_topic') ?? null;
    const deadLetterProblem = deadLetterTopic !== null ? checkTopicName(deadLetterTopic) : null;
    if (deadLetterProblem !== null) throw badOption(correlationId, 'options.dead_letter_topic', `is not a valid MQTT topic name: ${deadLetterProblem}`);

    return {
        topic,
        filter: group != null ? `$share/${group}/${topic}` : topic,
        group,
        serializeEnvelope: flag('options.serialize_envelope'),
        autosubscribe: flag('options.autosubscribe'),
        qos: integer('options.qos', 0, 2) as QoS,
        retain: flag('options.retain'),
        maxBuffered: integer('options.max_buffered', 1, MAX_BUFFERED_LIMIT),
        acknowledge,
        deadLetterTopic,
    };
}
