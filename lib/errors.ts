import createError from '@fastify/error'

export const KeyMissingError = createError(
  'FST_IDEMPOTENCY_KEY_MISSING',
  'Missing %s header: this route requires an idempotency key',
  400
)

export const KeyInvalidError = createError(
  'FST_IDEMPOTENCY_KEY_INVALID',
  'Invalid %s header: %s',
  400
)

export const InProgressError = createError(
  'FST_IDEMPOTENCY_IN_PROGRESS',
  'A request with this idempotency key is still in progress; retry after %s seconds',
  423
)

export const PayloadMismatchError = createError(
  'FST_IDEMPOTENCY_PAYLOAD_MISMATCH',
  'This idempotency key was already used with a different request payload',
  422
)

export const StorageUnavailableError = createError(
  'FST_IDEMPOTENCY_STORAGE_UNAVAILABLE',
  'Idempotency storage is unavailable; the request was not processed',
  503
)

export const InvalidOptionError = createError(
  'FST_IDEMPOTENCY_INVALID_OPTION',
  'Invalid idempotency option %s: %s',
  500,
  TypeError
)

export const EncoderResultError = createError(
  'FST_IDEMPOTENCY_ENCODER_INVALID',
  'The idempotency encoder must return a non-empty string, but returned %s',
  500
)

export const AlreadyRegisteredError = createError(
  'FST_IDEMPOTENCY_ALREADY_REGISTERED',
  'fastify-idempotency-key is already registered in this context: register it once, before its routes',
  500
)
