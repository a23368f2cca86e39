"""The operator's settings: ``CRYPTOLAKE_OPERATOR_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cryptolake.operator.builders import Images


class OperatorSettings(BaseSettings):
    """Env: CRYPTOLAKE_OPERATOR_METRICS_PORT, CRYPTOLAKE_OPERATOR_KAFKA_IMAGE…"""

    model_config = SettingsConfigDict(env_prefix="CRYPTOLAKE_OPERATOR_", extra="ignore")

    # Prometheus metrics (0: off).
    metrics_port: int = Field(default=9402, ge=0, le=65535)
    kafka_image: str = Images.kafka
    redpanda_image: str = Images.redpanda
    minio_image: str = Images.minio
    producer_image: str = Images.producer
    jobs_image: str = Images.jobs
    api_image: str = Images.api

    def images(self) -> Images:
        return Images(
            kafka=self.kafka_image,
            redpanda=self.redpanda_image,
            minio=self.minio_image,
            producer=self.producer_image,
            jobs=self.jobs_image,
            api=self.api_image,
        )
